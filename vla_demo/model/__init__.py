"""The VLA model: encoders, fusion Transformer, action heads, and the instruction tokenizer."""
