"""Word splitting done once per document and shared by every heuristic filter.

datatrove's Gopher, C4 and FineWeb filters split words with spaCy's blank English tokenizer, once
per filter. Here the words of a partition are computed once, kept in the hidden column ``_words``
(``list<large_string>``, one list per document) and reused by every later stage of the fused
chain; a stage computes the column only when it is missing. The runner drops ``_``-prefixed
columns before writing documents.

The splitter reimplements spaCy's tokenizer algorithm for English (whitespace chunks, special
cases, prefix / suffix / infix rules, URL match) with its published rules, so word counts and
n-grams match datatrove's closely enough for the same keep/drop decisions. Unlike spaCy it
memoises every whitespace chunk (natural text is Zipfian, so most chunks are cache hits) and falls
back to a plain regex for chunks longer than ``LONG_CHUNK`` characters, so a 10 MB line without a
space costs one regex pass.

Documents whose ``language`` is written without spaces (Chinese, Japanese, Thai, Khmer, Lao,
Myanmar; a null language: by the document's characters) are split by
``refine.pipeline.segment``: runs of that script by its segmenter (jieba's dictionary for Chinese,
Sudachi for Japanese...), the text between runs by the rules above. Only those rows leave the
vectorised batch path. A table without a ``language`` column (no language ID before the filters)
splits every document by the English rules, as datatrove's filters do with their default
``language="en"``: English parity then holds for every page, even a stray Chinese one.

Also here: the line / paragraph helpers and the vectorised duplicate counting that several filters
share (Python's ``str.splitlines`` / ``str.strip`` semantics, expressed as Arrow regexes).
"""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import regex

from refine.filters import spacy_words
from refine.pipeline import segment
from refine.pipeline.segment import LANGUAGE_COLUMN

WORDS_COLUMN = "_words"
WORDS_TYPE = pa.list_(pa.large_string())

#: Chunks (whitespace-free runs) longer than this are split by a plain regex, not spaCy's rules:
#: the rules are quadratic in the worst case and such chunks (base64, minified code, text without
#: spaces) are not words anyway. Unit: characters.
LONG_CHUNK = 1000
_CACHE_MAX = 500_000
_CACHE_CHUNK_MAX = 64  # longer chunks are split every time rather than cached (memory bound)

# ---------------------------------------------------------------------------------------------
# spaCy 3.8 English tokenizer rules (spacy/lang/char_classes.py, punctuation.py, en/ and
# tokenizer_exceptions.py; MIT licence). ALPHA classes are approximated by Unicode categories.
_MARKS = r"\p{Mn}\p{Mc}"  # spaCy's script ranges (Tamil, Devanagari...) include vowel signs
_ALPHA = r"\p{L}" + _MARKS
_ALPHA_LOWER = r"\p{Ll}\p{Lo}\p{Lm}" + _MARKS
_ALPHA_UPPER = r"\p{Lu}\p{Lt}\p{Lo}\p{Lm}" + _MARKS
_PUNCT = (
    r"… …… , : ; \! \? ¿ ؟ ¡ \( \) \[ \] \{ \} < > _ # \* & 。 ？ ！ ， 、 ； ： ～ · । ، ۔ ؛ ٪"
)
_QUOTES = r'\' " ” “ ` ‘ ´ ’ ‚ , „ » « 「 」 『 』 （ ） 〔 〕 【 】 《 》 〈 〉 〈 〉  ⟦ ⟧'
_HYPHENS = "- – — -- --- —— ~"
_CURRENCY = (
    r"\$ £ € ¥ ฿ US\$ C\$ A\$ ₽ ﷼ ₴ ₠ ₡ ₢ ₣ ₤ ₥ ₦ ₧ ₨ ₩ ₪ ₫ € ₭ ₮ ₯ ₰ "
    r"₱ ₲ ₳ ₴ ₵ ₶ ₷ ₸ ₹ ₺ ₻ ₼ ₽ ₾ ₿"
)
_UNITS = (
    "km km² km³ m m² m³ dm dm² dm³ cm cm² cm³ mm mm² mm³ ha µm nm yd in ft "
    "kg g mg µg t lb oz m/s km/h kmh mph hPa Pa mbar mb MB kb KB gb GB tb "
    "TB T G M K % км км² км³ м м² м³ дм дм² дм³ см см² см³ мм мм² мм³ нм "
    "кг г мг м/с км/ч кПа Па мбар Кб КБ кб Мб МБ мб Гб ГБ гб Тб ТБ тб"
    "كم كم² كم³ م م² م³ سم سم² سم³ مم مم² مم³ كم غرام جرام جم كغ ملغ كوب اكواب"
)


def _split(chars: str) -> list[str]:
    return chars.strip().split(" ")


def _merge(chars: str) -> str:
    return chars.strip().replace(" ", "|")


_LIST_PUNCT = _split(_PUNCT)
_LIST_QUOTES = _split(_QUOTES)
_LIST_CURRENCY = _split(_CURRENCY)
_LIST_ELLIPSES = [r"\.\.+", "…"]
_LIST_ICONS = [r"\p{So}"]
_CONCAT_QUOTES = _QUOTES.strip().replace(" ", "")

_PREFIXES = (
    ["§", "%", "=", "—", "–", r"\+(?![0-9])"]
    + _LIST_PUNCT
    + _LIST_ELLIPSES
    + _LIST_QUOTES
    + _LIST_CURRENCY
    + _LIST_ICONS
)
_SUFFIXES = (
    _LIST_PUNCT
    + _LIST_ELLIPSES
    + _LIST_QUOTES
    + _LIST_ICONS
    + ["'s", "'S", "’s", "’S", "—", "–"]
    + [
        r"(?<=[0-9])\+",
        r"(?<=°[FfCcKk])\.",
        rf"(?<=[0-9])(?:{_merge(_CURRENCY)})",
        rf"(?<=[0-9])(?:{_merge(_UNITS)})",
        rf"(?<=[0-9{_ALPHA_LOWER}%²\-\+{_merge(_PUNCT)}(?:{_CONCAT_QUOTES})])\.",
        rf"(?<=[{_ALPHA_UPPER}][{_ALPHA_UPPER}])\.",
    ]
)
_INFIXES = (
    _LIST_ELLIPSES
    + _LIST_ICONS
    + [
        r"(?<=[0-9])[+\-\*^](?=[0-9-])",
        rf"(?<=[{_ALPHA_LOWER}{_CONCAT_QUOTES}])\.(?=[{_ALPHA_UPPER}{_CONCAT_QUOTES}])",
        rf"(?<=[{_ALPHA}]),(?=[{_ALPHA}])",
        rf"(?<=[{_ALPHA}0-9])(?:{_merge(_HYPHENS)})(?=[{_ALPHA}])",
        rf"(?<=[{_ALPHA}0-9])[:<>=/](?=[{_ALPHA}])",
    ]
)
_prefix_search = regex.compile("|".join("^" + p for p in _PREFIXES if p.strip())).search
_suffix_re = regex.compile("|".join(p + "$" for p in _SUFFIXES if p.strip()))
#: No suffix rule but the ellipsis (``\.\.+``) strips more than this many characters (the
#: longest are units such as "اكواب"), so the search for one starts this far from the end.
_SUFFIX_WINDOW = 8


def _suffix_search(string: str):
    """``_suffix_re.search(string)``, without trying every start position of a long chunk."""
    if len(string) > _SUFFIX_WINDOW and not string.endswith(".."):
        return _suffix_re.search(string, len(string) - _SUFFIX_WINDOW)
    return _suffix_re.search(string)


_infix_finditer = regex.compile("|".join(p for p in _INFIXES if p.strip())).finditer
_URL_MATCH = regex.compile(
    r"(?u)^(?:(?:[\w\+\-\.]{2,})://)?(?:\S+(?::\S*)?@)?(?:"
    r"(?!(?:10|127)(?:\.\d{1,3}){3})(?!(?:169\.254|192\.168)(?:\.\d{1,3}){2})"
    r"(?!172\.(?:1[6-9]|2\d|3[0-1])(?:\.\d{1,3}){2})"
    r"(?:[1-9]\d?|1\d\d|2[01]\d|22[0-3])(?:\.(?:1?\d{1,2}|2[0-4]\d|25[0-5])){2}"
    r"(?:\.(?:[1-9]\d?|1\d\d|2[0-4]\d|25[0-4]))"
    r"|(?:(?:[A-Za-z0-9\u00a1-\uffff][A-Za-z0-9\u00a1-\uffff_-]{0,62})?[A-Za-z0-9\u00a1-\uffff]\.)+"
    rf"(?:[{_ALPHA_LOWER}]{{2,63}}))"
    r"(?::\d{2,5})?(?:[/?#]\S*)?$"
).match
_LONG_CHUNK_SPLIT = regex.compile(r"\w+|[^\w\s]").findall

# Special cases: strings spaCy keeps as one token, and contractions it splits at fixed offsets
# ("don't" -> "do" "n't"; lower-case entries also stand for their Capitalised and ’ variants).
_SPECIAL_SINGLE = (
    "' '' 'Cause 'Cos 'Coz 'Cuz 'S 'bout 'cause 'cos 'coz 'cuz 'd 'em 'll 'nuff 're 's (*_*) "
    "(-8 (-: (-; (-_-) (._.) (: (; (= (>_<) (^_^) (o: (¬_¬) (ಠ_ಠ) (╯°□°）╯︵┻━┻ )-: ): -_- -__- "
    "._. 0.0 0.o 0_0 0_o 8) 8-) 8-D 8D :'( :') :'-( :'-) :( :(( :((( :() :) :)) :))) :* :-( "
    ":-(( :-((( :-) :-)) :-))) :-* :-/ :-0 :-3 :-> :-D :-O :-P :-X :-] :-o :-p :-x :-| :-} :/ "
    ":0 :1 :3 :> :D :O :P :X :] :o :o) :p :x :| :} :’( :’) :’-( :’-) ;) ;-) ;-D ;D ;_; <.< "
    "</3 <3 <33 <333 <space> =( =) =/ =3 =D =[ =] =| >.< >.> >:( >:o ><(((*> @_@ Adm. Ak. "
    "Ala. Apr. Ariz. Ark. Aug. Bros. C++ Calif. Co. Colo. Conn. Corp. D.C. Dec. Del. Doin "
    "Doin' Doin’ Dr. E.G. E.g. Feb. Fla. Ga. Gen. Goin Goin' Goin’ Gov. Havin Havin' Havin’ "
    "I.E. I.e. Ia. Id. Ill. Inc. Ind. Jan. Jr. Jul. Jun. Kan. Kans. Ky. La. Lovin Lovin' "
    "Lovin’ Ltd. Ma'am Mar. Mass. Ma’am Md. Messrs. Mich. Minn. Miss. Mo. Mont. Mr. Mrs. Ms. "
    "Mt. N.C. N.D. N.H. N.J. N.M. N.Y. Neb. Nebr. Nev. Nothin Nothin' Nothin’ Nov. Nuthin "
    "Nuthin' Nuthin’ O'clock O.O O.o O_O O_o Oct. Okla. Ol Ol' Ol’ Ore. O’clock Pa. Ph.D. "
    "Prof. Rep. Rev. S.C. Sen. Sep. Sept. Somethin Somethin' Somethin’ St. Tenn. V.V V_V Va. "
    'Wash. Wis. XD XDD [-: [: [= \\") \\n \\t ]= ^_^ ^__^ ^___^ a. a.m. and/or b. c. co. d. '
    "doin doin' doin’ e. e.g. em f. g. goin goin' goin’ h. havin havin' havin’ i. i.e. j. k. "
    "l. ll lovin lovin' lovin’ m. ma'am ma’am n. nothin nothin' nothin’ nuff nuthin nuthin' "
    "nuthin’ o'clock o. o.0 o.O o.o o_0 o_O o_o ol ol' ol’ o’clock p. p.m. q. r. s. somethin "
    "somethin' somethin’ t. u. v. v.s. v.v v_v vs. w. w/o x. xD xDD y. z. ¯\\(ツ)/¯ ä. ö. ü. "
    "ಠ_ಠ ಠ︵ಠ — ‘S ‘s ’ ’Cause ’Cos ’Coz ’Cuz ’S ’bout ’cause ’cos ’coz ’cuz ’d ’em ’ll ’nuff "
    "’re ’s ’’"
)
_SPECIAL_SPLIT = (
    "10a.m.:2 10am:2 10p.m.:2 10pm:2 11a.m.:2 11am:2 11p.m.:2 11pm:2 12a.m.:2 12am:2 12p.m.:2 "
    "12pm:2 1a.m.:1 1am:1 1p.m.:1 1pm:1 2a.m.:1 2am:1 2p.m.:1 2pm:1 3a.m.:1 3am:1 3p.m.:1 "
    "3pm:1 4a.m.:1 4am:1 4p.m.:1 4pm:1 5a.m.:1 5am:1 5p.m.:1 5pm:1 6a.m.:1 6am:1 6p.m.:1 "
    "6pm:1 7a.m.:1 7am:1 7p.m.:1 7pm:1 8a.m.:1 8am:1 8p.m.:1 8pm:1 9a.m.:1 9am:1 9p.m.:1 "
    "9pm:1 ain't:2 aint:2 aren't:3 arent:3 c'mon:3 can't:2 can't've:2,5 cannot:3 cant:2 "
    "cantve:2,4 could've:5 couldn't:5 couldn't've:5,8 couldnt:5 couldntve:5,7 couldve:5 "
    "daren't:4 darent:4 didn't:3 didn't've:3,6 didnt:3 didntve:3,5 doesn't:4 doesn't've:4,7 "
    "doesnt:4 doesntve:4,6 don't:2 don't've:2,5 dont:2 dontve:2,4 gonna:3 gotta:3 hadn't:3 "
    "hadn't've:3,6 hadnt:3 hadntve:3,5 hasn't:3 hasnt:3 haven't:4 havent:4 he'd:2 he'd've:2,4 "
    "he'll:2 he'll've:2,5 he's:2 hed:2 hedve:2,3 hellve:2,4 hes:2 how'd:3 how'd've:3,5 "
    "how'd'y:3,5 how'll:3 how'll've:3,6 how're:3 how's:3 how've:3 howd:3 howdve:3,4 howll:3 "
    "howllve:3,5 howre:3 hows:3 howve:3 i'd:1 i'd've:1,3 i'll:1 i'll've:1,4 i'm:1 i'ma:1,3 "
    "i've:1 id:1 idve:1,2 illve:1,3 im:1 ima:1,2 isn't:2 isnt:2 it'd:2 it'd've:2,4 it'll:2 "
    "it'll've:2,5 it's:2 itd:2 itdve:2,3 itll:2 itllve:2,4 ive:1 let's:3 mayn't:3 "
    "mayn't've:3,6 maynt:3 mayntve:3,5 might've:5 mightn't:5 mightn't've:5,8 mightnt:5 "
    "mightntve:5,7 mightve:5 must've:4 mustn't:4 mustn't've:4,7 mustnt:4 mustntve:4,6 "
    "mustve:4 needn't:4 needn't've:4,7 neednt:4 needntve:4,6 not've:3 notve:3 oughtn't:5 "
    "oughtn't've:5,8 oughtnt:5 oughtntve:5,7 shan't:3 shan't've:3,6 shant:3 shantve:3,5 "
    "she'd:3 she'd've:3,5 she'll:3 she'll've:3,6 she's:3 shedve:3,4 shellve:3,5 shes:3 "
    "should've:6 shouldn't:6 shouldn't've:6,9 shouldnt:6 shouldntve:6,8 shouldve:6 that'd:4 "
    "that'd've:4,6 that'll:4 that'll've:4,7 that's:4 thatd:4 thatdve:4,5 thatll:4 "
    "thatllve:4,6 thats:4 there'd:5 there'd've:5,7 there'll:5 there'll've:5,8 there're:5 "
    "there's:5 there've:5 thered:5 theredve:5,6 therell:5 therellve:5,7 therere:5 theres:5 "
    "thereve:5 these'd:5 these'd've:5,7 these'll:5 these'll've:5,8 these're:5 these've:5 "
    "thesed:5 thesedve:5,6 thesell:5 thesellve:5,7 thesere:5 theseve:5 they'd:4 they'd've:4,6 "
    "they'll:4 they'll've:4,7 they're:4 they've:4 theyd:4 theydve:4,5 theyll:4 theyllve:4,6 "
    "theyre:4 theyve:4 this'd:4 this'd've:4,6 this'll:4 this'll've:4,7 this's:4 thisd:4 "
    "thisdve:4,5 thisll:4 thisllve:4,6 thiss:4 those'd:5 those'd've:5,7 those'll:5 "
    "those'll've:5,8 those're:5 those've:5 thosed:5 thosedve:5,6 thosell:5 thosellve:5,7 "
    "thosere:5 thoseve:5 wasn't:3 wasnt:3 we'd:2 we'd've:2,4 we'll:2 we'll've:2,5 we're:2 "
    "we've:2 wed:2 wedve:2,3 wellve:2,4 weren't:4 werent:4 weve:2 what'd:4 what'd've:4,6 "
    "what'll:4 what'll've:4,7 what're:4 what's:4 what've:4 whatd:4 whatdve:4,5 whatll:4 "
    "whatllve:4,6 whatre:4 whats:4 whatve:4 when'd:4 when'd've:4,6 when'll:4 when'll've:4,7 "
    "when're:4 when's:4 when've:4 whend:4 whendve:4,5 whenll:4 whenllve:4,6 whenre:4 whens:4 "
    "whenve:4 where'd:5 where'd've:5,7 where'll:5 where'll've:5,8 where're:5 where's:5 "
    "where've:5 whered:5 wheredve:5,6 wherell:5 wherellve:5,7 wherere:5 wheres:5 whereve:5 "
    "who'd:3 who'd've:3,5 who'll:3 who'll've:3,6 who're:3 who's:3 who've:3 whod:3 whodve:3,4 "
    "wholl:3 whollve:3,5 whos:3 whove:3 why'd:3 why'd've:3,5 why'll:3 why'll've:3,6 why're:3 "
    "why's:3 why've:3 whyd:3 whydve:3,4 whyll:3 whyllve:3,5 whyre:3 whys:3 whyve:3 won't:2 "
    "won't've:2,5 wont:2 wontve:2,4 would've:5 wouldn't:5 wouldn't've:5,8 wouldnt:5 "
    "wouldntve:5,7 wouldve:5 you'd:3 you'd've:3,5 you'll:3 you'll've:3,6 you're:3 you've:3 "
    "youd:3 youdve:3,4 youll:3 youllve:3,5 youre:3 youve:3 =y'all:2 =yall:1 =y’all:2 =°C.:1,2 "
    "=°F.:1,2 =°K.:1,2 =°c.:1,2 =°f.:1,2 =°k.:1,2"
)


def _build_specials() -> dict[str, tuple[str, ...]]:
    specials = {s: (s,) for s in _SPECIAL_SINGLE.split(" ")}
    for item in _SPECIAL_SPLIT.split(" "):
        key, _, cuts = item.rpartition(":")
        if key.startswith("="):
            variants = {key[1:]}
        else:
            cased = {key, key[:1].upper() + key[1:]}
            variants = {v for c in cased for v in (c, c.replace("'", "’"))}
        offsets = [int(c) for c in cuts.split(",")]
        for v in variants:
            bounds = [0, *offsets, len(v)]
            specials[v] = tuple(v[a:b] for a, b in zip(bounds, bounds[1:], strict=False))
    return specials


_SPECIALS = _build_specials()


def _build_special_merges() -> tuple[dict[tuple[str, ...], tuple[str, ...]], int]:
    """Special cases the affix rules would split ("a." -> "a" "."), keyed by that split.

    spaCy re-merges them after tokenizing (its ``_special_matcher``), e.g. "(a." -> "(" "a.".
    """
    merges = {}
    for key, tokens in _SPECIALS.items():
        split = tuple(_split_affixes(key, {}))
        if len(split) > 1:
            merges[split] = tokens
    return merges, max(map(len, merges))


def _merge_specials(tokens: list[str]) -> list[str]:
    """Greedy longest-first, then leftmost, non-overlapping merge of split special cases."""
    n = len(tokens)
    found = []
    for i in range(n):
        for size in range(min(_MERGE_MAX, n - i), 1, -1):
            special = _SPECIAL_MERGES.get(tuple(tokens[i : i + size]))
            if special is not None:
                found.append((-size, i, special))
    if not found:
        return tokens
    taken = [False] * n
    chosen = []
    for neg_size, i, special in sorted(found):
        if not any(taken[i : i - neg_size]):
            taken[i : i - neg_size] = [True] * -neg_size
            chosen.append((i, -neg_size, special))
    out: list[str] = []
    pos = 0
    for i, size, special in sorted(chosen):
        out.extend(tokens[pos:i])
        out.extend(special)
        pos = i + size
    out.extend(tokens[pos:])
    return out


def _split_infixes(string: str, out: list[str]) -> None:
    start = 0
    for match in _infix_finditer(string):
        a, b = match.start(), match.end()
        if a == 0:
            continue
        if a != start:
            out.append(string[start:a])
        if a != b:
            out.append(string[a:b])
        start = b
    if start < len(string):
        out.append(string[start:])


def split_chunk(string: str) -> tuple[str, ...]:
    """spaCy's English tokenization of one whitespace-free chunk (``Tokenizer._tokenize``)."""
    special = _SPECIALS.get(string)
    if special is not None:
        return special
    if string.isalpha():  # letters only: no prefix, suffix or infix rule applies
        return (string,)
    if len(string) > LONG_CHUNK:
        return tuple(_LONG_CHUNK_SPLIT(string))
    tokens = _split_affixes(string, _SPECIALS)
    if len(tokens) > 1 and _SPECIAL_MERGE_CHARS.intersection(tokens):
        tokens = _merge_specials(tokens)
    return tuple(tokens)


def _split_affixes(string: str, specials: dict[str, tuple[str, ...]]) -> list[str]:
    """spaCy's ``_split_affixes`` + ``_attach_tokens`` with the special cases ``specials``."""
    prefixes: list[str] = []
    suffixes: list[str] = []
    last_size = 0
    while string and len(string) != last_size:
        if string in specials:
            break
        last_size = len(string)
        m = _prefix_search(string)
        pre_len = m.end() - m.start() if m else 0
        if pre_len:
            prefix, minus_pre = string[:pre_len], string[pre_len:]
            if minus_pre and minus_pre in specials:
                prefixes.append(prefix)
                string = minus_pre
                break
        m = _suffix_search(string[pre_len:])
        suf_len = m.end() - m.start() if m else 0
        if suf_len:
            suffix, minus_suf = string[-suf_len:], string[:-suf_len]
            if minus_suf and minus_suf in specials:
                suffixes.append(suffix)
                string = minus_suf
                break
        if pre_len and suf_len and pre_len + suf_len <= len(string):
            string = string[pre_len:-suf_len]
            prefixes.append(prefix)
            suffixes.append(suffix)
        elif pre_len:
            string = minus_pre
            prefixes.append(prefix)
        elif suf_len:
            string = minus_suf
            suffixes.append(suffix)
        if string and string in specials:
            break
    tokens = prefixes
    if string:
        special = specials.get(string)
        if special is not None:
            tokens.extend(special)
        elif string.isalnum() or ("." in string and _URL_MATCH(string)):
            # letters and digits only: no infix rule applies; a URL has a dot in its host
            tokens.append(string)
        else:
            _split_infixes(string, tokens)
    tokens.extend(reversed(suffixes))
    return tokens


_SPECIAL_MERGES, _MERGE_MAX = _build_special_merges()
#: Tokens that start some split special case: chunks without them need no merge pass.
_SPECIAL_MERGE_CHARS = frozenset(k[0] for k in _SPECIAL_MERGES)


_chunk_cache: dict[str, tuple[str, ...]] = {}


def _split_cached(chunk: str) -> tuple[str, ...]:
    tokens = split_chunk(chunk)
    if len(chunk) <= _CACHE_CHUNK_MAX:
        if len(_chunk_cache) >= _CACHE_MAX:
            _chunk_cache.clear()
        _chunk_cache[chunk] = tokens
    return tokens


def split_words(text: str) -> list[str]:
    """The words of one text, as datatrove's ``split_into_words(text, "en")`` gives them."""
    get = _chunk_cache.get
    words: list[str] = []
    for chunk in text.split():
        tokens = get(chunk)
        words.extend(_split_cached(chunk) if tokens is None else tokens)
    return words


def split_spaced(
    texts: pa.Array | pa.ChunkedArray | list, rules: str | None = None
) -> pa.ListArray:
    """Words of every text of a batch by the English rules (``rules`` None) or by spaCy's rules
    for language ``rules`` (:mod:`refine.filters.spacy_words`); no segmentation.

    The batch is cut into whitespace chunks by Arrow and the chunks are dictionary-encoded, so
    Python only sees each distinct chunk once (web text is Zipfian: a batch has ~5x fewer
    distinct chunks than chunks); the words of every occurrence are gathered by Arrow.
    """
    if isinstance(texts, list):
        texts = pa.array(texts, pa.large_string())
    texts = combine(pc.fill_null(texts, ""))
    n = len(texts)
    pieces, parents = flat_with_parents(pc.split_pattern_regex(texts, f"[{WS}]+"))
    nonempty = pc.greater(pc.binary_length(pieces), 0)
    pieces = pieces.filter(nonempty)
    parents = parents[as_numpy(nonempty).astype(bool)]
    encoded = combine(pc.dictionary_encode(pieces))
    distinct = encoded.dictionary.to_pylist()
    if rules is None:
        tokens = list(map(_chunk_cache.get, distinct))
        for i in [i for i, t in enumerate(tokens) if t is None]:
            tokens[i] = _split_cached(distinct[i])
    else:
        tokens = spacy_words.split_chunks(distinct, rules, LONG_CHUNK, _LONG_CHUNK_SPLIT)
    sizes = np.fromiter(map(len, tokens), np.int64, len(tokens))
    by_chunk = pa.LargeListArray.from_arrays(
        pa.array(np.concatenate([[0], np.cumsum(sizes)]), pa.int64()),
        pa.array(list(itertools.chain.from_iterable(tokens)), pa.large_string()),
    )
    indices = as_numpy(encoded.indices)
    flat = pc.list_flatten(by_chunk.take(encoded.indices)) if len(indices) else by_chunk.values
    per_text = np.bincount(parents, weights=sizes[indices], minlength=n).astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(per_text)])
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), flat.cast(pa.large_string()))


def compute_words(table: pa.Table) -> pa.ListArray:
    """Split every document of ``table`` into words (the expensive step; done once per chain)."""
    languages = table[LANGUAGE_COLUMN] if LANGUAGE_COLUMN in table.column_names else None
    return split_texts(table["text"], languages)


def split_texts(
    texts: pa.Array | pa.ChunkedArray | list,
    languages: pa.Array | pa.ChunkedArray | list | None = None,
) -> pa.ListArray:
    """Words of every text of a batch, as one ``list<large_string>`` array (null text: none).

    Texts whose label in ``languages`` (one per text; a null label: by the text's characters)
    is a language written without spaces are segmented one by one (``refine.pipeline.segment``);
    texts of a language that FineWeb-2 splits by spaCy's rules for that language (French,
    German...: :mod:`refine.filters.spacy_words`) take the batch path with those rules; all
    others, and all texts when ``languages`` is None, the batch path of :func:`split_spaced`
    with the English rules.
    """
    if isinstance(texts, list):
        texts = pa.array(texts, pa.large_string())
    if languages is None:
        return split_spaced(texts)
    if isinstance(languages, list):
        languages = pa.array(languages, pa.string())
    keys = segment.segmenters(texts, languages)
    rules = _rules(languages)
    if keys is None and not any(r is not None for r in rules):
        return split_spaced(texts)
    texts = combine(pc.fill_null(texts, ""))
    if keys is None:
        keys = np.full(len(texts), None, dtype=object)
    groups: dict[tuple[str, str | None], np.ndarray] = {}
    seg = keys != None  # noqa: E711 (element-wise)
    for key in {k for k in keys[seg]}:
        groups["segment", key] = np.flatnonzero(keys == key)
    for code in {r for r in rules[~seg]}:
        groups["rules", code] = np.flatnonzero(~seg & (rules == code))
    pieces, order = [], []
    for (kind, key), rows in groups.items():
        sub = texts.take(pa.array(rows, pa.int64()))
        if kind == "segment":
            words = pa.array(
                [segment.split_words(text, key, split_words) for text in sub.to_pylist()],
                WORDS_TYPE,
            )
        elif key is None:
            words = split_spaced(sub)
        else:
            words = _split_by_spacy(sub, key)
        pieces.append(words)
        order.append(rows)
    position = np.empty(len(texts), np.int64)
    position[np.concatenate(order)] = np.arange(len(texts))
    return pa.concat_arrays([w.cast(WORDS_TYPE) for w in pieces]).take(pa.array(position))


def _rules(languages: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Per text, the spaCy language of its word rules, or None (English rules)."""
    enc = pc.dictionary_encode(combine(languages))
    mapped = np.array(
        [spacy_words.rules_for_language(v) for v in enc.dictionary.to_pylist()] + [None], object
    )
    return mapped[np.asarray(pc.fill_null(enc.indices, len(enc.dictionary)).to_numpy(False))]


def _split_by_spacy(texts: pa.Array, code: str) -> pa.Array:
    """Words by spaCy ``code``: the batch path, and whole documents where a special case with a
    space could apply (only those rows leave Arrow)."""
    whole = spacy_words.whole_documents(texts, code)
    if not whole:
        return split_spaced(texts, code)
    rest = np.setdiff1d(np.arange(len(texts)), whole)
    words = split_spaced(texts.take(pa.array(rest, pa.int64())), code)
    alone = [spacy_words.split_document(texts[i].as_py(), code) for i in whole]
    order = np.empty(len(texts), np.int64)
    order[np.concatenate([rest, whole])] = np.arange(len(texts))
    joined = pa.concat_arrays([words.cast(WORDS_TYPE), pa.array(alone, WORDS_TYPE)])
    return joined.take(pa.array(order))


def words_of(table: pa.Table) -> pa.ListArray | pa.ChunkedArray:
    """The ``_words`` column of ``table``, computed when an earlier stage has not left it."""
    if WORDS_COLUMN in table.column_names:
        return table[WORDS_COLUMN]
    return compute_words(table)


# ---------------------------------------------------------------------------------------------
# Lines and duplicates, with Python's str semantics, vectorised over a batch.

#: Characters Python's ``str.isspace`` (hence ``split``/``strip``) treats as whitespace (RE2).
WS = (
    r"\t\n\x0b\x0c\r\x1c-\x1f \x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}"
    r"\x{202f}\x{205f}\x{3000}"
)
#: Line boundaries of ``str.splitlines``.
LINE_BREAK = r"\r\n|[\n\r\x0b\x0c\x1c\x1d\x1e\x{85}\x{2028}\x{2029}]"


def texts(table: pa.Table) -> pa.ChunkedArray | pa.Array:
    """The ``text`` column with nulls as empty strings."""
    return pc.fill_null(table["text"], "")


def strip(arr):
    """``str.strip()`` on every string."""
    return pc.replace_substring_regex(arr, rf"\A[{WS}]+|[{WS}]+\z", "")


def splitlines(arr) -> tuple[pa.ListArray, np.ndarray]:
    """``str.splitlines()`` of every string, plus how many trailing pieces are not lines.

    Arrow's split keeps a last empty piece after a final line break (and gives ``[""]`` for an
    empty string) where Python's ``splitlines`` gives none; the second value (0 or 1 per string)
    is that piece, so ``len(text.splitlines()) == list_value_length - extra``.
    """
    lines = pc.split_pattern_regex(arr, LINE_BREAK)
    extra = pc.or_(pc.equal(arr, ""), pc.match_substring_regex(arr, rf"(?:{LINE_BREAK})\z"))
    return combine(lines), extra.to_numpy(zero_copy_only=False).astype(np.int64)


def combine(arr):
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


def flat_with_parents(lists) -> tuple[pa.Array, np.ndarray]:
    """The values of a list array and, for each value, the index of its row."""
    lists = combine(lists)
    parents = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)
    return pc.list_flatten(lists), parents


def per_row_sum(values, parents: np.ndarray, n: int) -> np.ndarray:
    """Sum ``values`` (numpy or Arrow, one per list item) into their ``n`` rows."""
    if not isinstance(values, np.ndarray):
        values = np.asarray(values.to_numpy(zero_copy_only=False))
    return np.bincount(parents, weights=values.astype(np.float64), minlength=n)


def as_numpy(arr) -> np.ndarray:
    arr = combine(arr)
    return np.asarray(arr.to_numpy(zero_copy_only=False))


def duplicate_counts(
    values: pa.Array, parents: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """datatrove's ``find_duplicates`` per row: (repeated elements, characters in them).

    Every occurrence after the first of an element within its row counts, with its length in
    characters.
    """
    if len(values) == 0:
        return np.zeros(n, np.int64), np.zeros(n, np.int64)
    t = pa.table({"row": pa.array(parents), "v": values, "len": pc.utf8_length(values)})
    g = t.group_by(["row", "v"], use_threads=False).aggregate([("len", "max"), ("len", "count")])
    rows = as_numpy(g["row"])
    extra = as_numpy(g["len_count"]) - 1
    dup_elements = np.bincount(rows, weights=extra, minlength=n)
    dup_chars = np.bincount(rows, weights=extra * as_numpy(g["len_max"]), minlength=n)
    return dup_elements.astype(np.int64), dup_chars.astype(np.int64)


def ratio(num, den) -> np.ndarray:
    """``num / den`` as float64, NaN where ``den`` is 0 (datatrove would divide by zero)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


@functools.lru_cache(maxsize=64)
def char_class(chars: frozenset[str]) -> str:
    """An RE2 character class body matching exactly ``chars``."""
    return "".join(f"\\x{{{ord(c):x}}}" for c in sorted(chars))
