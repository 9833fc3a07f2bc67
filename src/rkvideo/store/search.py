"""Full-text search over the descriptions: FTS5 words, or substrings for scripts written without spaces.

Why two ways: FTS5's default tokenizer (unicode61) cuts text at spaces and punctuation. That suits
English and every language written with spaces, and gives bm25 ranking; but a Chinese, Japanese or
Thai sentence has no spaces, so unicode61 keeps a whole run of it as one word and a word inside the
run is never found ("汽车" in "一辆红色的汽车停在门口"). A query with a word in such a script is
therefore answered by substring: every word of the query must occur in the text. The trigram index
``descriptions_fts_trigram`` (migration 0101-i9-descriptions-trigram) finds the candidates for
words of three or more characters and ranks them; words of one or two characters — most Chinese
words — cannot use a trigram index and are checked with ``instr`` over the candidates (all
descriptions when no word is long enough: a scan, about a millisecond per megabyte of text). Where
SQLite has no trigram tokenizer (before 3.34) every such query is a scan. Queries without such
words keep the unicode61 index and its ranking unchanged.
"""
from __future__ import annotations

import re

# Scripts written without spaces between words: Thai, Lao, Myanmar, Khmer, Hiragana, Katakana, CJK
# ideographs (with extension A, compatibility and the supplementary planes), and Hangul syllables
# (Korean spaces its words, but particles join them: "자동차가").
NO_SPACES = re.compile("[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff"
                       "\uac00-\ud7af\uf900-\ufaff\U00020000-\U0003134f]")
TRIGRAM_TABLE = "descriptions_fts_trigram"
COLUMNS = ("d.id, d.job_id, coalesce(j.path, d.path) AS path, d.model, d.prompt, d.created_at")


def words(query: str) -> list[str]:
    """The words of a plain (not ``--raw``) query: its space-separated pieces that hold a letter or digit
    (a piece of punctuation alone, like a stray quote, matches nothing)."""
    return [piece for piece in query.split() if any(c.isalnum() for c in piece)]


def by_substring(terms: list[str]) -> bool:
    """Whether to answer by substring: a word is in a script written without spaces."""
    return any(NO_SPACES.search(term) for term in terms)


def fts_match(terms: list[str]) -> str:
    """An FTS5 query in which every word is a quoted string: operators and quotes are text."""
    return " ".join('"' + term.replace('"', '""') + '"' for term in terms)


def words_sql(match: str, limit: int) -> tuple[str, list]:
    """unicode61 words, bm25 ranking, FTS5's own snippet."""
    sql = (f"SELECT {COLUMNS}, snippet(descriptions_fts, 0, '[', ']', '…', 16) AS snippet, "
           "descriptions_fts.rank AS rank "
           "FROM descriptions_fts JOIN descriptions d ON d.id = descriptions_fts.rowid "
           "LEFT JOIN jobs j ON j.id = d.job_id "
           "WHERE descriptions_fts MATCH ? ORDER BY descriptions_fts.rank LIMIT ?")
    return sql, [match, limit]


def substring_sql(terms: list[str], limit: int, trigram: bool) -> tuple[str, list]:
    """Every word a substring of the text (case-insensitive for ASCII letters); ranked by the trigram
    index when a word is long enough for it, else newest first. The snippet is made by ``snippet``."""
    long = [t for t in terms if len(t) >= 3] if trigram else []
    found = " AND ".join("instr(lower(d.text), lower(?)) > 0" for _ in terms)
    if long:
        sql = (f"SELECT {COLUMNS}, d.text AS text, {TRIGRAM_TABLE}.rank AS rank "
               f"FROM {TRIGRAM_TABLE} JOIN descriptions d ON d.id = {TRIGRAM_TABLE}.rowid "
               f"LEFT JOIN jobs j ON j.id = d.job_id "
               f"WHERE {TRIGRAM_TABLE} MATCH ? AND {found} ORDER BY {TRIGRAM_TABLE}.rank LIMIT ?")
        return sql, [fts_match(long), *terms, limit]
    sql = (f"SELECT {COLUMNS}, d.text AS text, NULL AS rank FROM descriptions d LEFT JOIN jobs j ON j.id = d.job_id "
           f"WHERE {found} ORDER BY d.id DESC LIMIT ?")
    return sql, [*terms, limit]


def snippet(text: str, terms: list[str], width: int = 40) -> str:
    """About ``width`` characters either side of the first match, every match in [brackets], as
    FTS5's snippet shows them."""
    lowered = text.lower()
    first = min((i for i in (lowered.find(t.lower()) for t in terms) if i >= 0), default=0)
    start, end = max(0, first - width), min(len(text), first + width)
    window = text[start:end]
    pattern = re.compile("|".join(re.escape(t) for t in sorted(terms, key=len, reverse=True)), re.IGNORECASE)
    marked = pattern.sub(lambda m: f"[{m.group()}]", window)
    return ("…" if start > 0 else "") + marked + ("…" if end < len(text) else "")
