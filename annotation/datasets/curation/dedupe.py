"""Duplicate rows: exact (same text after normalising) and near (MinHash LSH, datasketch).

The caller passes one string per row (its prompt and responses joined) and asks each
deduper, row by row, `first_of(key, text)`: the key of an earlier row this one duplicates,
or None, in which case the row is remembered. So the row kept from each group is the first
one the caller shows: to keep the earliest copy, pass rows oldest first; to keep the
best-judged copy, pass them best first. The dedupers never reorder anything.

- `ExactDeduper` keeps a 16-byte BLAKE2b digest of each normalised text (not the text):
  a million rows cost about 100 MB (digests and dict, measured; the caller's keys apart).
- `NearDeduper` shingles the normalised text into character 5-grams, sketches them with
  datasketch's MinHash (seeded, so runs repeat exactly) and asks a MinHashLSH index for
  candidates. Character 5-grams rather than word n-grams because a chat row is short:
  changing 3 words of a 60-word text leaves a character-5-gram Jaccard near 0.87 but a
  word-3-gram Jaccard near 0.75, under any useful threshold (measured on synthetic text).
  The LSH bands favour recall (weights 0.1/0.9), and each candidate is then confirmed by
  its estimated Jaccard (the two signatures' agreement) reaching the threshold: recall
  for a 0.87 pair goes from 0.68 (default bands, no check) to about 0.9, and the check
  turns away most band collisions below the threshold. Texts shorter than one shingle
  fall back to exact matching. Exact copies have equal signatures, so near also catches
  them. Memory: about 3.4 KB a row (measured; mostly the LSH's per-band buckets), so a
  million rows need some 3.4 GB: near dedupe suits chat datasets, not web crawls.

We write the shingle hashing and the signature arithmetic ourselves, vectorised with
numpy, because datasketch's `update_batch` calls a Python hash function per shingle, which
was half the time (near ran at ~4.5k rows/s with it, ~9k without); the seeded
permutations, the MinHash object and the LSH index are datasketch's. Throughput on the dev
machine (2 shared CPUs, CPU time, 23,000 synthetic 60-word rows of which 3,000 copies):
exact 110k-180k rows/s, near 6.5k-9k rows/s; near caught 2,785 of the 3,000 copies (all
1,000 exact ones, 1,785 of 2,000 with 3 words changed).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

import numpy as np
from datasketch import MinHash, MinHashLSH


class _PunctuationDeleted(dict):
    """str.translate table: punctuation and symbols (Unicode P* and S*) are deleted.

    Filled on first sight of each character rather than for all 1.1M code points up front
    (0.2 s at import).
    """

    def __missing__(self, code_point: int) -> int | None:
        category = unicodedata.category(chr(code_point))
        value = None if category[0] in "PS" else code_point
        self[code_point] = value
        return value


_PUNCTUATION_DELETED = _PunctuationDeleted()
# Characters that may be punctuation or symbols; only these runs go through the table,
# because translating a whole non-ASCII text character by character is 3x slower.
_NON_WORD_RUN = re.compile(r"[^\w\s]+")


def _without_punctuation(text: str) -> str:
    if text.isascii():
        # CPython translates ASCII text through a per-call cache: ~3 us for 60 words.
        return text.translate(_PUNCTUATION_DELETED)
    return _NON_WORD_RUN.sub(lambda run: run.group().translate(_PUNCTUATION_DELETED), text)


SHINGLE_CHARS = 5
# Odd 64-bit multiplier of the polynomial shingle hash.
_SHINGLE_BASE = np.uint64(0x9E3779B97F4A7C15)
# MurmurHash3's 64-bit finaliser (Appleby, public domain), so the low 32 bits we keep
# depend on every character of the shingle.
_FMIX64 = (np.uint64(33), np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB9FE1A85EC53))


def normalise(text: str) -> str:
    """Return `text` in the form duplicates are compared in.

    NFKC (full-width and compatibility forms become plain ones), casefold, every
    punctuation mark and symbol (Unicode categories P* and S*, emoji included) deleted,
    and whitespace collapsed to single spaces with none at the ends. Punctuation inside a
    token goes too ("don't" -> "dont", "3.14" -> "314"): both copies of a text change
    alike, and one rule is faster than telling a token's edges from its inside. Combining
    marks (Hindi vowel signs, say) are parts of letters and stay.
    """
    bare = _without_punctuation(unicodedata.normalize("NFKC", text).casefold())
    if "  " not in bare and bare.isprintable():
        # Only single ASCII spaces between words (every other whitespace character is
        # unprintable), so splitting and joining again would change nothing but the ends.
        return bare.strip(" ")
    return " ".join(bare.split())


def _digest(normalised: str) -> bytes:
    return hashlib.blake2b(normalised.encode("utf-8"), digest_size=16).digest()


class ExactDeduper:
    """Finds rows whose normalised text equals an earlier row's."""

    def __init__(self) -> None:
        self._first_key_by_digest: dict[bytes, str] = {}

    def first_of(self, key: str, text: str) -> str | None:
        """Key of the earlier row with the same normalised text; None remembers this row."""
        return self._first_of_normalised(key, normalise(text))

    def _first_of_normalised(self, key: str, normalised: str) -> str | None:
        first = self._first_key_by_digest.setdefault(_digest(normalised), key)
        return None if first == key else first


def shingle_hashes(normalised: str) -> np.ndarray:
    """32-bit hashes of the text's character 5-grams (unsorted, may repeat)."""
    codes = np.frombuffer(normalised.encode("utf-32-le"), dtype="<u4").astype(np.uint64)
    count = len(codes) - SHINGLE_CHARS + 1
    hashes = np.zeros(count, dtype=np.uint64)
    for offset in range(SHINGLE_CHARS):
        hashes = hashes * _SHINGLE_BASE + codes[offset : offset + count]
    shift, first, second = _FMIX64
    hashes ^= hashes >> shift
    hashes *= first
    hashes ^= hashes >> shift
    hashes *= second
    hashes ^= hashes >> shift
    return hashes.astype(np.uint32)


class NearDeduper:
    """Finds rows whose text is nearly an earlier row's (estimated Jaccard >= threshold)."""

    def __init__(self, *, threshold: float = 0.8, num_perm: int = 64, seed: int = 1) -> None:
        self.threshold = threshold
        # Holds the seeded permutations (a, b) of datasketch's "affine32" scheme.
        self._blank = MinHash(num_perm=num_perm, seed=seed)
        self._index = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=(0.1, 0.9))
        # key -> (arrival order, signature), to confirm candidates and pick the earliest.
        self._signatures: dict[str, tuple[int, np.ndarray]] = {}
        self._short_texts = ExactDeduper()

    def first_of(self, key: str, text: str) -> str | None:
        """Key of the earliest similar earlier row; None remembers this row."""
        normalised = normalise(text)
        if len(normalised) < SHINGLE_CHARS:
            return self._short_texts._first_of_normalised(key, normalised)
        sketch = self.sketch(normalised)
        earlier = self._earliest_similar(sketch)
        if earlier is None:
            self._index.insert(key, sketch, check_duplication=False)
            self._signatures[key] = (len(self._signatures), sketch.hashvalues)
        return earlier

    def sketch(self, normalised: str) -> MinHash:
        """The MinHash of a normalised text's shingles.

        Each signature value is the minimum over shingles of (a * h + b) mod 2^32:
        Broder's MinHash with datasketch's seeded "affine32" permutations, as
        `MinHash.update_batch` computes it less its pre-mix of the input hashes (ours
        are mixed already), done for all shingles and permutations in one numpy pass.
        """
        multipliers, offsets = self._blank.permutations
        permuted = np.multiply.outer(multipliers, shingle_hashes(normalised))
        permuted += offsets[:, None]
        sketch = self._blank.copy()
        sketch.hashvalues = permuted.min(axis=1)
        return sketch

    def _earliest_similar(self, sketch: MinHash) -> str | None:
        signature = sketch.hashvalues
        best: tuple[int, str] | None = None
        for candidate in self._index.query(sketch):
            order, other = self._signatures[candidate]
            agreement = np.count_nonzero(other == signature) / len(signature)
            if agreement >= self.threshold and (best is None or order < best[0]):
                best = (order, candidate)
        return None if best is None else best[1]
