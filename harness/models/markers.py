"""End-of-turn / end-of-text markers seen in real vocabs: the one list.

The tokenizer family checks that llama.cpp treats each one a vocab has as end-of-generation
(or generation runs past the turn); the generation family flags any of them (with the model's
own end-of-generation texts) that leaks into returned text."""

END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<|endoftext|>", "<end_of_turn>", "<|end|>",
               "</s>", "<|return|>", "<|END_OF_TURN_TOKEN|>", "<｜end▁of▁sentence｜>", "<|eom_id|>",
               "<turn|>")
