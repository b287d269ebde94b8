"""Files pinned by URL and sha256: a local copy, or a cached download, or a fresh one, always verified.

What: `read(pin, cache, local, key)` returns a file's bytes, which must have the pin's sha256 wherever
they come from: the local copy `local` when a config key (`key`) names one (for machines without
network), else the cache when it holds the right bytes, else a download from the pin's URL, written
to the cache atomically once verified (nothing unverified is ever cached or used).

Why: third-party files that decide a score (FastChat's MT-Bench judge prompts, questions and reference
answers) are taken from one pinned commit, so every run grades against the same bytes.

FastChat's files are pinned at FASTCHAT_COMMIT (`fastchat_url` names a file of that commit); the judge
(lorarepro.domain.evaluation.judge: its grading prompts) and the MT-Bench data loader (lorarepro.domain.data.external:
MT_BENCH, the questions and the reference answers) share it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from lorarepro.core.atomic import write_with

FASTCHAT_REPO = "lm-sys/FastChat"
FASTCHAT_COMMIT = "0e6d3e4beaab66f4d3f93db72541a4abab8af28d"


class PinnedError(RuntimeError):
    """A pinned file could not be read or downloaded, or its bytes are not the pinned ones; the message says which."""


@dataclass(frozen=True)
class Pin:
    """One file: what it is (for messages), where it is downloaded from, its sha256, where the pin comes
    from (e.g. "judge_prompts.jsonl of lm-sys/FastChat at commit ...") and, for a file of a repository,
    its path there (where a cache or a local copy in the repository's layout holds it)."""
    what: str
    url: str
    sha256: str
    origin: str
    path: str = ""

    def record(self) -> dict:
        """What a manifest records about the file."""
        return {"path": self.path, "url": self.url, "sha256": self.sha256}


def fastchat_url(path: str) -> str:
    """The raw URL of `path` (in FastChat's repository layout) at the pinned commit."""
    return f"https://raw.githubusercontent.com/{FASTCHAT_REPO}/{FASTCHAT_COMMIT}/{path}"


def fastchat_pin(what: str, path: str, sha256: str) -> Pin:
    """A file of FastChat's repository at the pinned commit."""
    return Pin(what, fastchat_url(path), sha256, f"{path} of {FASTCHAT_REPO} at commit {FASTCHAT_COMMIT}", path)


# MT-Bench as FastChat grades it (gen_judgment.py): its 80 questions, and GPT-4's answers to the 30 math,
# reasoning and coding ones, the references those are graded against (lorarepro.domain.data.external reads them)
MT_BENCH = {
    "questions": fastchat_pin("FastChat's MT-Bench questions", "fastchat/llm_judge/data/mt_bench/question.jsonl",
                              "119565adbab82227089cefdb44c8d7e2cf04dc0a0ec233634c82e7d4e2a944f7"),
    "references": fastchat_pin("FastChat's MT-Bench reference answers (GPT-4)",
                               "fastchat/llm_judge/data/mt_bench/reference_answer/gpt-4.jsonl",
                               "f957a5bc977badb66885ec970e6cd08527845780313f0995764260e5777b9b3f"),
}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read(pin: Pin, cache: Path, local: str | Path | None = None, key: str = "", hint: str = "") -> bytes:
    """The pinned file's bytes: from `local` (named by config key `key`) when given, else from `cache`
    when it holds the pinned bytes, else downloaded and cached. `hint`: how to use a local copy instead
    (e.g. "set config key '...' to a local copy of that file"), for the messages of a failed download."""
    if local is not None:
        path = Path(local)
        try:
            data = path.read_bytes()
        except OSError as err:
            raise PinnedError(f"config key '{key}': cannot read {path} ({err.strerror})") from None
        verify(pin, data, f"{path} (config key '{key}')")
        return data
    cache = Path(cache)
    data = cache.read_bytes() if cache.is_file() else b""
    if sha256(data) != pin.sha256:  # not cached yet, or a stale or damaged copy
        data = download(pin, hint)
        write_with(cache, lambda tmp: tmp.write_bytes(data))
    return data


def download(pin: Pin, hint: str = "") -> bytes:
    """The pinned file from its URL, verified."""
    import requests  # deferred: only a download needs it (and its import is slow)

    offline = f"; on a machine without network, {hint}" if hint else ""
    try:
        response = requests.get(pin.url, timeout=60)
        response.raise_for_status()
    except requests.RequestException as err:
        raise PinnedError(f"cannot download {pin.what} from {pin.url} ({type(err).__name__}: {err}){offline}") from None
    verify(pin, response.content, f"{pin.url}" + (f" (or {hint}, verified the same way)" if hint else ""))
    return response.content


def verify(pin: Pin, data: bytes, where: str) -> None:
    """PinnedError unless `data` has the pinned sha256; `where` names the bytes' origin."""
    if (found := sha256(data)) != pin.sha256:
        raise PinnedError(f"{pin.what} from {where}: sha256 {found}, expected {pin.sha256} ({pin.origin})")
