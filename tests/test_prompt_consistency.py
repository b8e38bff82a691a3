"""Training prompt = inference prompt, on the real Llama-3-Instruct chat template and on ChatML (the template
strings are fixtures: no Hub). The tokens a model is trained to continue from must be exactly the tokens it is
given at inference, with one BOS and the same system prompt, and the token that ends the learned assistant turn
must stop generation."""

from __future__ import annotations

import copy

import pytest

# Meta-Llama-3-8B-Instruct's tokenizer_config.json chat_template.
LLAMA3_INSTRUCT = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
# ChatML, as Qwen2.5 and many others render it.
CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + "
    "'\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SYSTEM = "Solve the problem step by step, then end with a line 'Final answer: <answer>'."
CONVERSATIONS = [
    [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "What is 17 + 25?"},
     {"role": "assistant", "content": "17 + 25 = 42.\n\nFinal answer: 42"}],
    [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "  Is 91 prime?  "},
     {"role": "assistant", "content": "91 = 7 x 13, so no.\n\nFinal answer: No"}],
]


@pytest.fixture(params=["llama3", "chatml"])
def templated(request, tiny_fp32):
    tokenizer = copy.deepcopy(tiny_fp32.tokenizer)
    if request.param == "chatml":
        tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.chat_template = LLAMA3_INSTRUCT if request.param == "llama3" else CHATML
    return request.param, tokenizer


def test_the_prompt_of_training_is_the_prompt_of_inference(templated):
    from llm_trainer.data.tokenization import IGNORE_INDEX, tokenize_batch
    from llm_trainer.inference import encode_prompts

    name, tokenizer = templated
    trained = tokenize_batch({"messages": CONVERSATIONS}, tokenizer, max_seq_length=4096, truncate=False)
    served, _ = encode_prompts(tokenizer, [c[:-1] for c in CONVERSATIONS], max_prompt_tokens=4096)
    for input_ids, labels, prompt in zip(trained["input_ids"], trained["labels"], served):
        masked = [t for t, label in zip(input_ids, labels) if label == IGNORE_INDEX]
        assert masked == prompt  # the same tokens, in the same order
        assert input_ids[:len(prompt)] == prompt  # and they are the start of the training row
        assert input_ids.count(tokenizer.bos_token_id) == (1 if name == "llama3" else 0)
        assert SYSTEM in tokenizer.decode(prompt)


def test_the_learned_end_of_turn_stops_generation(templated):
    from llm_trainer.data.tokenization import IGNORE_INDEX, tokenize_batch
    from llm_trainer.inference import stop_token_ids

    name, tokenizer = templated
    end_of_turn = tokenizer.convert_tokens_to_ids("<|eot_id|>" if name == "llama3" else "<|im_end|>")
    trained = tokenize_batch({"messages": CONVERSATIONS}, tokenizer, max_seq_length=4096, truncate=False)
    stops = stop_token_ids(tokenizer)
    for labels, conversation in zip(trained["labels"], CONVERSATIONS):
        learned = [t for t in labels if t != IGNORE_INDEX]
        answer = tokenizer.decode(learned, skip_special_tokens=True).strip()
        assert answer == conversation[-1]["content"].strip()
        first_stop = next(i for i, t in enumerate(learned) if t in stops)  # the model learns to emit a stop token
        assert learned[first_stop] == end_of_turn
        assert tokenizer.decode(learned[:first_stop], skip_special_tokens=True).strip() == answer
