"""The UDC creator's optional text processing: NLTK tokenizing, stemming and lemmatizing.

Nothing is ever downloaded. `check_resources` finds every NLTK data package the chosen steps
need before any work starts and says how to install the missing ones.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from dualenc.errors import DualencError

logger = logging.getLogger(__name__)

# step -> (the resource nltk.data.find looks up, the package name nltk.downloader installs)
RESOURCES = {
    "tokenize": ("tokenizers/punkt_tab/english/", "punkt_tab"),
    "lemmatize": ("corpora/wordnet", "wordnet"),
}


def import_nltk():
    """Import NLTK, an optional dependency, or say how to install it."""
    try:
        import nltk
    except ImportError:
        raise DualencError(
            "--tokenize, --stem and --lemmatize need NLTK: pip install 'dualenc[nlp]'"
        ) from None
    return nltk


def check_resources(tokenize: bool = False, lemmatize: bool = False) -> None:
    """Raise a DualencError naming every NLTK data package the chosen steps need but lack."""
    wanted = [step for step, on in (("tokenize", tokenize), ("lemmatize", lemmatize)) if on]
    if not wanted:
        return
    nltk = import_nltk()
    missing = []
    for step in wanted:
        resource, package = RESOURCES[step]
        try:
            nltk.data.find(resource)
        except LookupError:
            missing.append((step, resource, package))
    if missing:
        lines = [
            f"--{step} needs the NLTK data package {package!r} ({resource}), which is not installed"
            for step, resource, package in missing
        ]
        packages = " ".join(package for _, _, package in missing)
        them = "them" if len(missing) > 1 else "it"
        lines.append(f"install {them} yourself with: python -m nltk.downloader {packages}")
        lines.append("(dualenc never downloads data; NLTK_DATA sets where NLTK looks)")
        raise DualencError("\n".join(lines))


class TextProcessor:
    """Tokenize, stem and lemmatize utterance texts with the UDC creator's tools, with a cache.

    Unlike the creator, which processes whole rows, each utterance is processed before the
    __eou__ and __eot__ markers are added, so markers are never split or stemmed. Tokens come
    from NLTK's `word_tokenize` when `tokenize` is on and from splitting on whitespace
    otherwise; stemming (Snowball, English) runs before lemmatizing (WordNet, verbs). The
    result is the tokens joined by single spaces. With no step on, texts pass through
    unchanged.
    """

    def __init__(self, tokenize: bool = False, stem: bool = False, lemmatize: bool = False):
        self.active = tokenize or stem or lemmatize
        self._cache: dict[str, str] = {}
        self._steps: list[Callable[[str], str]] = []
        self._tokenize: Callable[[str], list[str]] = str.split
        if not self.active:
            return
        check_resources(tokenize=tokenize, lemmatize=lemmatize)
        nltk = import_nltk()
        if tokenize:
            self._tokenize = nltk.word_tokenize
        if stem:
            self._steps.append(nltk.stem.SnowballStemmer("english").stem)
        if lemmatize:
            lemmatizer = nltk.stem.WordNetLemmatizer()
            self._steps.append(lambda token: lemmatizer.lemmatize(token, pos="v"))

    def __call__(self, text: str) -> str:
        """The processed text, computed once per distinct input."""
        if not self.active:
            return text
        done = self._cache.get(text)
        if done is None:
            try:
                tokens = self._tokenize(text)
                for step in self._steps:
                    tokens = [step(token) for token in tokens]
            except LookupError as err:
                # NOTE: a resource can vanish or be broken after check_resources found it.
                raise DualencError(f"an NLTK resource could not be loaded: {err}") from None
            done = self._cache[text] = " ".join(tokens)
        return done
