"""The label value that the loss ignores (prompt tokens, padding): PyTorch's and transformers' convention."""

IGNORE_INDEX = -100
