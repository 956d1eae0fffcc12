"""A tiny random chat model of the default prompt model's classes (Qwen2ForCausalLM and
Qwen2Tokenizer, byte-level with a ChatML chat template), saved with save_pretrained and so
loaded by the prompt helper through the same from_pretrained path as Qwen2.5-1.5B-Instruct.
Its vocabulary is the 256 byte symbols (no merges): its text is nonsense."""

from __future__ import annotations

from pathlib import Path

# The shape of Qwen2.5's template (ChatML), short.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def make_tiny_prompt_model(directory: Path) -> Path:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen2Tokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    # Printable ASCII first, so that the symbols a random model favours decode to text.
    symbols = sorted(bytes_to_unicode().items())
    vocab = {symbol: index for index, (_byte, symbol) in enumerate(symbols)}
    tokenizer = Qwen2Tokenizer(
        vocab=vocab, merges=[], unk_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>"]})
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=8192,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        eos_token_id=None,  # never stops early: every answer is max_new_tokens long
        tie_word_embeddings=True,
    )
    model = Qwen2ForCausalLM(config)
    with torch.no_grad():
        # Only letters and the space can be the answer: a random model could otherwise pick
        # control bytes or a special token, and a skipped special token answers nothing.
        keep = [vocab[chr(c)] for c in range(ord("a"), ord("z") + 1)] + [vocab["Ġ"]]
        mask = torch.ones(config.vocab_size, dtype=torch.bool)
        mask[keep] = False
        model.model.embed_tokens.weight[mask] *= 0.0
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
