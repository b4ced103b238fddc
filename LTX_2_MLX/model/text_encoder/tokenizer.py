"""Gemma tokenization as ltx-core's `LTXVGemmaTokenizer` does it: the prompt stripped, BOS
prepended, truncated to `max_length` tokens and left-padded to exactly that length.

The tokenizer is transformers' `GemmaTokenizerFast`: tokenizer.json when the directory has one,
else the same tokenizer built from the sentencepiece tokenizer.model as transformers converts it
(`GemmaConverter`). That conversion keeps only BPE with byte fallback and spaces spelled "▁": it
drops the model's own normalizer, so no dummy-prefix "▁" is added before the first word, runs of
spaces are kept and no NFKC is applied, whatever the sentencepiece model says.
"""

import json
import struct
from pathlib import Path

import mlx.core as mx
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers

# ltx-core builds its tokenizer with max_length=1024 (module_ops_from_gemma_root).
DEFAULT_MAX_LENGTH = 1024
# GemmaTokenizerFast's defaults, for a tokenizer_config.json that leaves them out.
_SPECIAL_TOKEN_DEFAULTS = {"bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>", "pad_token": "<pad>"}


def _token_content(token) -> str | None:
    if isinstance(token, dict):
        return token.get("content")
    return token


class GemmaTokenizer:
    """The fast `tokenizers` tokenizer of a Gemma directory; special tokens and BOS/EOS come from
    tokenizer_config.json (with GemmaTokenizerFast's defaults)."""

    def __init__(self, tokenizer_dir: str | Path, max_length: int = DEFAULT_MAX_LENGTH):
        tokenizer_dir = Path(tokenizer_dir)
        if max_length < 1:
            raise ValueError(f"max_length={max_length} must be at least 1, e.g. {DEFAULT_MAX_LENGTH}.")
        self.max_length = max_length
        config_path = tokenizer_dir / "tokenizer_config.json"
        config = json.loads(config_path.read_text()) if config_path.is_file() else {}
        self.add_bos_token = config.get("add_bos_token", True)
        self.add_eos_token = config.get("add_eos_token", False)
        special = {
            name: _token_content(config[name]) if name in config else default
            for name, default in _SPECIAL_TOKEN_DEFAULTS.items()
        }

        fast_path, sentencepiece_path = tokenizer_dir / "tokenizer.json", tokenizer_dir / "tokenizer.model"
        if fast_path.is_file():
            self._tokenizer = Tokenizer.from_file(str(fast_path))
        elif sentencepiece_path.is_file():
            self._tokenizer = tokenizer_from_sentencepiece(sentencepiece_path, special)
        else:
            raise FileNotFoundError(
                f"{tokenizer_dir}: neither tokenizer.json nor tokenizer.model found. Point --gemma-path at a "
                "complete Gemma 3 download (e.g. hf download google/gemma-3-12b-it)."
            )
        _add_configured_tokens(self._tokenizer, config, special)

        def token_id(name: str) -> int | None:
            return self._tokenizer.token_to_id(special[name]) if special[name] is not None else None

        self.bos_token_id, self.eos_token_id, pad = token_id("bos_token"), token_id("eos_token"), token_id("pad_token")
        # As LTXVGemmaTokenizer: without a pad token, pad with EOS.
        self.pad_token_id = pad if pad is not None else self.eos_token_id
        if self.bos_token_id is None or self.pad_token_id is None:
            raise ValueError(f"{tokenizer_dir}: the tokenizer has no BOS or pad/EOS token; is this a Gemma tokenizer?")

    def id_to_token(self, token_id: int) -> str:
        return self._tokenizer.id_to_token(token_id)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of `text`; special tokens written in it (e.g. <start_of_turn>) are kept whole."""
        ids = self._tokenizer.encode(text, add_special_tokens=False).ids
        if add_special_tokens:
            ids = ([self.bos_token_id] if self.add_bos_token else []) + ids
            ids = ids + ([self.eos_token_id] if self.add_eos_token else [])
        return ids

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

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


def _add_configured_tokens(tokenizer: Tokenizer, config: dict, special: dict[str, str | None]) -> None:
    """tokenizer_config.json's added tokens, then the special tokens not yet among them, as
    transformers' PreTrainedTokenizerFast adds them when it loads."""
    special_contents = set(special.values()) | {
        _token_content(token) for token in config.get("additional_special_tokens") or []
    }
    tokens = []
    for _, token in sorted((config.get("added_tokens_decoder") or {}).items(), key=lambda item: int(item[0])):
        flags = {key: token[key] for key in ("single_word", "lstrip", "rstrip", "normalized") if key in token}
        is_special = token.get("special", False) or token["content"] in special_contents
        tokens.append(AddedToken(token["content"], special=is_special, **flags))
    added = {token.content for token in tokenizer.get_added_tokens_decoder().values()}
    added |= {token.content for token in tokens}
    tokens += [AddedToken(content, special=True) for content in sorted(special_contents - added - {None})]
    tokenizer.add_tokens(tokens)


# sentencepiece's ModelProto (sentencepiece_model.proto): the field numbers read here.
_PIECES, _TRAINER_SPEC = 1, 2
_PIECE_TEXT, _PIECE_SCORE, _PIECE_TYPE = 1, 2, 3
_TRAINER_MODEL_TYPE, _TRAINER_UNK_PIECE = 3, 45
_CONTROL, _USER_DEFINED = 3, 4
_BPE = 2
_MODEL_TYPES = {1: "unigram", 2: "BPE", 3: "word", 4: "char"}
# GemmaConverter marks these user-defined pieces special too.
_SPECIAL_USER_DEFINED = {"<start_of_turn>", "<end_of_turn>"}


def _read_varint(data: bytes, position: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7


def _protobuf_fields(data: bytes):
    """(field number, value) of each field of a serialized protobuf message: an int for varints,
    bytes for everything else (length-delimited or fixed-width)."""
    position = 0
    while position < len(data):
        key, position = _read_varint(data, position)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, position = _read_varint(data, position)
        elif wire_type in (1, 5):
            width = 8 if wire_type == 1 else 4
            value, position = data[position : position + width], position + width
        elif wire_type == 2:
            length, position = _read_varint(data, position)
            value, position = data[position : position + length], position + length
        else:
            raise ValueError(f"unsupported protobuf wire type {wire_type}")
        yield number, value


def _read_sentencepiece_model(path: Path) -> tuple[list[tuple[str, float, int]], int, str]:
    """(piece, score, type) of every piece in id order, the model type and the unknown piece."""
    pieces, model_type, unk_piece = [], 1, "<unk>"  # proto defaults: unigram, "<unk>"
    try:
        for number, value in _protobuf_fields(path.read_bytes()):
            if number == _PIECES:
                piece = {_PIECE_SCORE: b"\0\0\0\0", _PIECE_TYPE: 1}  # proto defaults: score 0, NORMAL
                piece.update(_protobuf_fields(value))
                score = struct.unpack("<f", piece[_PIECE_SCORE])[0]
                pieces.append((piece[_PIECE_TEXT].decode(), score, piece[_PIECE_TYPE]))
            elif number == _TRAINER_SPEC:
                spec = dict(_protobuf_fields(value))
                model_type = spec.get(_TRAINER_MODEL_TYPE, model_type)
                unk_piece = spec[_TRAINER_UNK_PIECE].decode() if _TRAINER_UNK_PIECE in spec else unk_piece
    except (IndexError, KeyError, UnicodeDecodeError, ValueError, struct.error) as err:
        pieces, reason = [], repr(err)
    else:
        reason = "no pieces"
    if not pieces:
        raise ValueError(f"{path}: not a sentencepiece model ({reason}); download Gemma's tokenizer.model again.")
    return pieces, model_type, unk_piece


def _bpe_merges(scored_pieces: list[tuple[str, float]], piece_ids: dict[str, int]) -> list[tuple[str, str]]:
    """The merges of a sentencepiece BPE vocabulary as transformers derives them: every split of a
    piece into two known pieces, the highest-scoring pieces' first; among equal scores the longer
    left, then the longer right part first, else vocabulary order."""
    candidates = []
    for piece, score in scored_pieces:
        splits = [(piece[:i], piece[i:]) for i in range(1, len(piece))]
        splits = [(left, right) for left, right in splits if left in piece_ids and right in piece_ids]
        splits.sort(key=lambda split: (piece_ids[split[0]], piece_ids[split[1]]))
        candidates += [(score, len(left), len(right), left, right) for left, right in splits]
    candidates.sort(key=lambda candidate: candidate[:3], reverse=True)  # stable: ties keep their order
    return [(left, right) for _, _, _, left, right in candidates]


def tokenizer_from_sentencepiece(
    path: str | Path, special: dict[str, str | None] = _SPECIAL_TOKEN_DEFAULTS
) -> Tokenizer:
    """The `tokenizers` tokenizer transformers' GemmaConverter makes of a sentencepiece
    tokenizer.model (before tokenizer_config.json's tokens are added)."""
    path = Path(path)
    pieces, model_type, unk_piece = _read_sentencepiece_model(path)
    if model_type != _BPE:
        raise ValueError(
            f"{path}: a sentencepiece {_MODEL_TYPES.get(model_type, model_type)} model; Gemma's is BPE. "
            "Use the tokenizer.model (or tokenizer.json) of google/gemma-3-12b-it."
        )
    piece_ids = {piece: index for index, (piece, _, _) in enumerate(pieces)}
    # As GemmaConverter: ids 0-2 are named after the pad, eos and bos tokens, and a vocabulary
    # without a tab piece gets one in place of the <0x09> byte piece.
    names = (special["pad_token"], special["eos_token"], special["bos_token"])
    scored = [(name or piece, 0.0) for name, (piece, _, _) in zip(names, pieces)]
    scored += [(piece, score) for piece, score, _ in pieces[3:]]
    if "\t" not in piece_ids and "<0x09>" in piece_ids:
        scored[piece_ids["<0x09>"]] = ("\t", 0.0)
        piece_ids["\t"] = piece_ids["<0x09>"]
    vocab = {piece: index for index, (piece, _) in enumerate(scored)}
    merges = _bpe_merges(list(dict(scored).items()), piece_ids)
    tokenizer = Tokenizer(models.BPE(vocab, merges, unk_token=unk_piece, fuse_unk=True, byte_fallback=True))
    tokenizer.normalizer = normalizers.Replace(" ", "▁")
    tokenizer.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tokenizer.add_tokens(
        [
            AddedToken(piece, normalized=False, special=kind == _CONTROL or piece in _SPECIAL_USER_DEFINED)
            for piece, _, kind in pieces
            if kind in (_CONTROL, _USER_DEFINED)
        ]
    )
    return tokenizer
