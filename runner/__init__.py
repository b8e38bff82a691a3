"""What the CLI does with ZenML: set up the stack, run pipelines, resolve model versions, chat. Not library code."""
