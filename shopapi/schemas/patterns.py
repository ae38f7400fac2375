"""Every string pattern the schemas use, each with the sentence a client is shown when a value
does not match it: msgspec's own message quotes the whole regex, which no mobile developer can
show a user (shopapi.messages turns it into the sentence registered here).
"""

from __future__ import annotations

# regex -> "must be a valid email address"; read by shopapi.messages
SENTENCES: dict[str, str] = {}


def pattern(regex: str, sentence: str) -> str:
    """`regex` for `Meta(pattern=...)`, registered with the sentence its mismatch answers."""
    SENTENCES[regex] = sentence
    return regex


# Never in a name, an email or one line of an address: C0 and C1 control characters and DEL,
# the line and paragraph separators (they break a line like \n does), and the bidi overrides and
# isolates, which make a name read differently from what it is (an admin list, a receipt).
UNSAFE = "\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029\\u202a-\\u202e\\u2066-\\u2069"
# what Python's str.strip() removes beyond UNSAFE: trimming can then never empty an email part
_BLANK = "\\x20\\xa0\\u1680\\u2000-\\u200a\\u202f\\u205f\\u3000"

# PostgreSQL text refuses NUL: refused here as a 422 (free text: passwords, descriptions)
NO_NUL = pattern("^[^\\x00]*$", "must not contain NUL characters")
# one line of printable text, possibly empty
ONE_LINE = pattern(f"^[^{UNSAFE}]*$", "must not contain control characters or line breaks")
# one line of printable text with something other than blanks (the services trim names)
FILLED_LINE = pattern(
    f"^[^{UNSAFE}]*[^{UNSAFE} ][^{UNSAFE}]*$",
    "must not be blank and must not contain control characters or line breaks",
)
# one @, no white space or control character inside; surrounding blanks are trimmed by the
# service
_EMAIL_PART = f"[^@{UNSAFE}{_BLANK}]+"
EMAIL = pattern(f"^[ \\t]*{_EMAIL_PART}@{_EMAIL_PART}[ \\t]*$", "must be a valid email address")
# digits, spaces and + - ( )
PHONE = pattern("^[0-9 +()-]*$", "may contain only digits, spaces and + - ( )")
# an absolute http(s) URL: a host, then an optional path/query/fragment without blanks
HTTP_URL = pattern(
    "^https?://[A-Za-z0-9._~%!$&'()*+,;=:@\\[\\]-]+([/?#][^\\x00-\\x20\\x7f]*)?$",
    "must be an absolute http or https URL",
)
# the scheme and the address are checked by the service (netguard), with field paths
NO_BLANKS = pattern("^[^\\x00-\\x20\\x7f]+$", "must not contain spaces or control characters")
CURSOR = pattern("^[A-Za-z0-9_-]+$", "is not a cursor this server issued")
