"""Tokenizer family: llama.cpp vs transformers token ids on the case's texts and the corpus."""
