"""Generation family: real weights, greedy decoding, grammars, stops, special tokens."""
