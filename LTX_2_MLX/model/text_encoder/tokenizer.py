"""Gemma tokenization as ltx-core's `LTXVGemmaTokenizer` does it: the prompt stripped, BOS
prepended, truncated to `max_length` tokens and left-padded to exactly that length."""

import json
import re
from pathlib import Path

import mlx.core as mx

# ltx-core builds its tokenizer with max_length=1024 (module_ops_from_gemma_root).
DEFAULT_MAX_LENGTH = 1024


def _token_content(token) -> str | None:
    if isinstance(token, dict):
        return token.get("content")
    return token


class GemmaTokenizer:
    """The fast `tokenizers` tokenizer from tokenizer.json, or sentencepiece's tokenizer.model
    when there is no tokenizer.json. Special tokens come from tokenizer_config.json."""

    def __init__(self, tokenizer_dir: str | Path, max_length: int = DEFAULT_MAX_LENGTH):
        tokenizer_dir = Path(tokenizer_dir)
        if max_length < 1:
            raise ValueError(f"max_length={max_length} must be at least 1, e.g. {DEFAULT_MAX_LENGTH}.")
        self.max_length = max_length
        config_path = tokenizer_dir / "tokenizer_config.json"
        config = json.loads(config_path.read_text()) if config_path.is_file() else {}
        self.add_bos_token = config.get("add_bos_token", True)
        self.add_eos_token = config.get("add_eos_token", False)

        fast_path, slow_path = tokenizer_dir / "tokenizer.json", tokenizer_dir / "tokenizer.model"
        if fast_path.is_file():
            from tokenizers import Tokenizer

            self._fast = Tokenizer.from_file(str(fast_path))
            self._slow = None
            token_to_id = self._fast.token_to_id
        elif slow_path.is_file():
            import sentencepiece

            self._fast = None
            self._slow = sentencepiece.SentencePieceProcessor(model_file=str(slow_path))
            token_to_id = self._slow_token_to_id
        else:
            raise FileNotFoundError(
                f"{tokenizer_dir}: neither tokenizer.json nor tokenizer.model found. Point --gemma-path at a "
                "complete Gemma 3 download (e.g. huggingface-cli download google/gemma-3-12b-it)."
            )

        def special(name: str, default: str | None) -> int | None:
            content = _token_content(config.get(name)) or default
            return token_to_id(content) if content is not None else None

        self.bos_token_id = special("bos_token", "<bos>")
        self.eos_token_id = special("eos_token", "<eos>")
        pad = special("pad_token", None)
        # As LTXVGemmaTokenizer: without a pad token, pad with EOS.
        self.pad_token_id = pad if pad is not None else self.eos_token_id
        if self.bos_token_id is None or self.pad_token_id is None:
            raise ValueError(f"{tokenizer_dir}: the tokenizer has no BOS or pad/EOS token; is this a Gemma tokenizer?")
        # For sentencepiece: the tokens written whole in text (sentencepiece alone would spell
        # out control tokens such as <bos>), and those decode(skip_special_tokens=True) drops.
        added = {_token_content(config.get(name)) for name in ("bos_token", "eos_token", "pad_token", "unk_token")}
        added |= {token["content"] for token in (config.get("added_tokens_decoder") or {}).values()}
        self._added_ids = {token: token_to_id(token) for token in added if token and token_to_id(token) is not None}
        self._added_pattern = (
            re.compile("(" + "|".join(re.escape(t) for t in sorted(self._added_ids, key=len, reverse=True)) + ")")
            if self._added_ids
            else None
        )
        self._special_ids = {i for i in (self.bos_token_id, self.eos_token_id, self.pad_token_id) if i is not None}
        for token in (config.get("added_tokens_decoder") or {}).values():
            if token.get("special") and token["content"] in self._added_ids:
                self._special_ids.add(self._added_ids[token["content"]])

    def _slow_token_to_id(self, token: str) -> int | None:
        token_id = self._slow.piece_to_id(token)
        return None if token_id == self._slow.unk_id() and token != self._slow.id_to_piece(token_id) else token_id

    def id_to_token(self, token_id: int) -> str:
        return self._fast.id_to_token(token_id) if self._fast is not None else self._slow.id_to_piece(token_id)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of `text`; special tokens written in it (e.g. <start_of_turn>) are kept whole."""
        if self._fast is not None:
            ids = self._fast.encode(text, add_special_tokens=False).ids
        else:
            pieces = self._added_pattern.split(text) if self._added_pattern else [text]
            ids = []
            for i, piece in enumerate(pieces):
                if i % 2:
                    ids.append(self._added_ids[piece])
                elif piece:
                    ids.extend(self._slow.encode(piece))
        if add_special_tokens:
            ids = ([self.bos_token_id] if self.add_bos_token else []) + ids
            ids = ids + ([self.eos_token_id] if self.add_eos_token else [])
        return ids

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        if self._fast is not None:
            return self._fast.decode(ids, skip_special_tokens=skip_special_tokens)
        if skip_special_tokens:
            ids = [i for i in ids if i not in self._special_ids]
        return self._slow.decode(ids)

    def __call__(self, prompt: str) -> tuple[mx.array, mx.array]:
        """(input_ids, attention_mask), each (1, max_length) int32, left-padded."""
        ids = self.encode(prompt.strip())
        if len(ids) > self.max_length:
            # transformers truncates the text, keeping the special tokens.
            tail = [self.eos_token_id] if self.add_eos_token else []
            ids = ids[: self.max_length - len(tail)] + tail
        padding = self.max_length - len(ids)
        input_ids = [self.pad_token_id] * padding + ids
        attention_mask = [0] * padding + [1] * len(ids)
        return mx.array([input_ids], dtype=mx.int32), mx.array([attention_mask], dtype=mx.int32)
