"""Shell syntax for the guard: split a script into simple commands the way the shell would.

`Tokens` removes quotes and escapes, splits on control operators (`;` `&&` `||` `|` `&`,
newlines, subshells), records redirections and here-documents, and keeps the inner scripts of
`$(...)`, backticks and `<(...)` on each `Word` so the caller can judge them too. Whatever only
makes sense as obfuscation at this level (invisible or look-alike characters, `$'\\x..'`,
`${IFS}`, substitutions inside arithmetic) raises `Refuse`, the exception every part of the
shell policy uses to refuse a command outright.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

from remed_daemon.guard.paths import UNKNOWN, normalize

MAX_COMMANDS = 200


@dataclass
class Word:
    text: str
    unknown: bool = False  # contains a variable, substitution or unresolved template
    quoted: bool = False
    subs: list[str] = field(default_factory=list)  # inner scripts of $(...) / `...`

    def path(self, cwd: str | None) -> str | None:
        return None if self.unknown else normalize(self.text, cwd)


@dataclass
class Cmd:
    words: list[Word] = field(default_factory=list)
    redirects: list[tuple[str, Word]] = field(default_factory=list)
    pipe_in: bool = False
    pipe_out: bool = False
    heredoc_in: bool = False
    function_def: bool = False


class Refuse(Exception):
    def __init__(self, rule: str, detail: str) -> None:
        super().__init__(detail)
        self.rule, self.detail = rule, detail


# --- tokeniser ------------------------------------------------------------------------------

_OPS = ("&&", "||", ";;", "|&", ";", "|", "&", "\n", "(", ")")
_REDIR = re.compile(r"(\d*|&)(>>|>\||>&|<<<|<<-|<<|<>|<&|>|<)")
_INVISIBLE = re.compile(r"[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u200b-\u200f\u202a-\u202e"
                        r"\u2060-\u2064\ufeff]")  # fmt: skip
_ANSI_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]|[0-7]|u[0-9a-fA-F]|U[0-9a-fA-F]|c.)")


def _find_close(s: str, i: int, opener: str, closer: str) -> int:
    """Index of the `closer` that matches an `opener` just before `i` (quotes respected)."""
    depth = 1
    while i < len(s):
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if c == "'":
            j = s.find("'", i + 1)
            if j < 0:
                raise Refuse("shell.syntax", "unterminated single quote")
            i = j + 1
            continue
        if c == '"':
            i = _find_dquote_end(s, i + 1) + 1
            continue
        if s.startswith(opener, i):
            depth += 1
            i += len(opener)
            continue
        if s.startswith(closer, i):
            depth -= 1
            if depth == 0:
                return i
            i += len(closer)
            continue
        i += 1
    raise Refuse("shell.syntax", f"unterminated {opener!r}")


def _find_dquote_end(s: str, i: int) -> int:
    while i < len(s):
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if c == '"':
            return i
        if s.startswith("$(", i):
            i = _find_close(s, i + 2, "(", ")") + 1
            continue
        if c == "`":
            j = s.find("`", i + 1)
            if j < 0:
                raise Refuse("shell.syntax", "unterminated backtick")
            i = j + 1
            continue
        i += 1
    raise Refuse("shell.syntax", "unterminated double quote")


class Tokens:
    """Splits a script into simple commands; nested scripts are returned for recursion."""

    def __init__(self, s: str, shell_vars: dict[str, str]) -> None:
        if _INVISIBLE.search(s.replace("\t", " ")):
            raise Refuse("obfuscation.invisible", "control or invisible characters in command")
        if nfkc_suspicious(s):
            raise Refuse(
                "obfuscation.lookalike", "look-alike (fullwidth/compatibility) characters"
            )
        self.s = s
        self.i = 0
        self.vars = shell_vars
        self.cmds: list[Cmd] = []
        self.heredocs: list[tuple[str, bool, Cmd]] = []

    def parse(self) -> list[Cmd]:
        cur = Cmd()
        s = self.s
        while self.i < len(s):
            c = s[self.i]
            if c in " \t":
                self.i += 1
                continue
            if c == "\\" and s.startswith("\\\n", self.i):
                self.i += 2
                continue
            if c == "#" and not cur.words:
                j = s.find("\n", self.i)
                self.i = len(s) if j < 0 else j
                continue
            m = _REDIR.match(s, self.i)
            if m and m.group(2) in ("<", ">") and s.startswith("(", m.end()):
                m = None  # process substitution, read as a word
            if m:
                op = m.group(2)
                self.i = m.end()
                while self.i < len(s) and s[self.i] in " \t":
                    self.i += 1
                if op in ("<<", "<<-"):
                    word = self._word()
                    quoted = word.quoted
                    self.heredocs.append((word.text, quoted, cur))
                    cur.heredoc_in = True
                    continue
                if op == "<<<":
                    cur.heredoc_in = True
                if (
                    op in (">&", "<&")
                    and self.i < len(s)
                    and (s[self.i].isdigit() or s[self.i] == "-")
                ):
                    self._word()
                    continue
                cur.redirects.append((op, self._word()))
                continue
            op2 = next((o for o in _OPS if s.startswith(o, self.i)), None)
            if op2 is not None and not (op2 in ("(",) and s.startswith("((", self.i)):
                self.i += len(op2)
                if op2 == "(" and cur.words:
                    cur.function_def = True
                if op2 == "\n" and self.heredocs:
                    self._read_heredocs()
                if op2 in ("|", "|&"):
                    cur.pipe_out = True
                    self._push(cur)
                    cur = Cmd(pipe_in=True)
                else:
                    self._push(cur)
                    cur = Cmd()
                continue
            if s.startswith("((", self.i):
                end = s.find("))", self.i)
                if end < 0:
                    raise Refuse("shell.syntax", "unterminated (( ))")
                inner = s[self.i + 2 : end]
                if "$(" in inner or "`" in inner:
                    raise Refuse("obfuscation.arithmetic", "command substitution in (( ))")
                self.i = end + 2
                continue
            cur.words.append(self._word())
        self._push(cur)
        return self.cmds

    def _push(self, cmd: Cmd) -> None:
        if cmd.words or cmd.redirects:
            self.cmds.append(cmd)
            if len(self.cmds) > MAX_COMMANDS:
                raise Refuse("shell.too_long", "more than 200 commands in one script")

    def _read_heredocs(self) -> None:
        for delim, quoted, cmd in self.heredocs:
            lines = []
            while self.i < len(self.s):
                j = self.s.find("\n", self.i)
                line = self.s[self.i : (len(self.s) if j < 0 else j)]
                self.i = len(self.s) if j < 0 else j + 1
                if line.strip() == delim:
                    break
                lines.append(line)
            body = "\n".join(lines)
            if not quoted and ("$(" in body or "`" in body):
                # An unquoted here-document expands substitutions: they run.
                for m in re.finditer(r"\$\(|`", body):
                    inner = _extract_sub(body, m.start())
                    if inner is not None:
                        cmd.words.append(Word(UNKNOWN, unknown=True, subs=[inner]))
        self.heredocs = []

    def _word(self) -> Word:
        s = self.s
        out: list[str] = []
        word = Word("")
        while self.i < len(s):
            c = s[self.i]
            if c in " \t\n;&|()" or (c in "<>" and not s.startswith("(", self.i + 1)):
                break
            if c == "\\":
                if self.i + 1 < len(s) and s[self.i + 1] == "\n":
                    self.i += 2
                    continue
                out.append(s[self.i + 1 : self.i + 2])
                word.quoted = True
                self.i += 2
                continue
            if c == "'":
                j = s.find("'", self.i + 1)
                if j < 0:
                    raise Refuse("shell.syntax", "unterminated single quote")
                out.append(s[self.i + 1 : j])
                word.quoted = True
                self.i = j + 1
                continue
            if c == '"':
                end = _find_dquote_end(s, self.i + 1)
                self._dquoted(s[self.i + 1 : end], out, word)
                word.quoted = True
                self.i = end + 1
                continue
            if c == "$" and s.startswith("$'", self.i):
                j = self.i + 2
                while j < len(s) and s[j] != "'":
                    j += 2 if s[j] == "\\" else 1
                body = s[self.i + 2 : j]
                if _ANSI_ESCAPE.search(body):
                    raise Refuse("obfuscation.escapes", f"$'...' with escapes: $'{body[:40]}'")
                out.append(body.replace("\\n", "\n").replace("\\t", "\t"))
                word.quoted = True
                self.i = j + 1
                continue
            if c == "$" or c == "`" or (c in "<>" and s.startswith("(", self.i + 1)):
                self.i = self._expansion(s, self.i, out, word)
                continue
            if c == "{" and s.startswith("{{", self.i):
                end = s.find("}}", self.i)
                if end < 0:
                    raise Refuse("jinja.syntax", "unterminated {{ in command")
                out.append(UNKNOWN)
                word.unknown = True
                self.i = end + 2
                continue
            out.append(c)
            self.i += 1
        word.text = "".join(out)
        return word

    def _dquoted(self, body: str, out: list[str], word: Word) -> None:
        i = 0
        while i < len(body):
            c = body[i]
            if c == "\\" and i + 1 < len(body) and body[i + 1] in '$`"\\\n':
                out.append(body[i + 1])
                i += 2
                continue
            if c in "$`":
                i = self._expansion(body, i, out, word)
                continue
            if body.startswith("{{", i):
                end = body.find("}}", i)
                if end < 0:
                    raise Refuse("jinja.syntax", "unterminated {{ in command")
                out.append(UNKNOWN)
                word.unknown = True
                i = end + 2
                continue
            out.append(c)
            i += 1

    def _expansion(self, s: str, i: int, out: list[str], word: Word) -> int:
        """Handle `$...`, backticks and process substitution at s[i]; return the next index."""
        if s.startswith("$((", i):
            end = s.find("))", i)
            if end < 0:
                raise Refuse("shell.syntax", "unterminated $(( ))")
            if "$(" in s[i + 3 : end] or "`" in s[i + 3 : end]:
                raise Refuse("obfuscation.arithmetic", "command substitution in $(( ))")
            out.append(UNKNOWN)
            word.unknown = True
            return end + 2
        if s.startswith("$(", i) or s.startswith("<(", i) or s.startswith(">(", i):
            end = _find_close(s, i + 2, "(", ")")
            word.subs.append(s[i + 2 : end])
            out.append(UNKNOWN)
            word.unknown = True
            return end + 1
        if s[i] == "`":
            end = s.find("`", i + 1)
            if end < 0:
                raise Refuse("shell.syntax", "unterminated backtick")
            word.subs.append(s[i + 1 : end].replace("\\`", "`"))
            out.append(UNKNOWN)
            word.unknown = True
            return end + 1
        if s.startswith("${", i):
            end = _find_close(s, i + 2, "{", "}")
            inner = s[i + 2 : end]
            mname = re.match(r"[!#]?(\w*)", inner)
            if "IFS" in inner:
                raise Refuse("obfuscation.ifs", "${IFS} used to hide word boundaries")
            if "$(" in inner or "`" in inner:
                word.subs.extend(re.findall(r"\$\(([^()]*)\)", inner))
            var = mname.group(1) if mname else ""
            if var in self.vars and inner == var:
                out.append(self.vars[var])
                return end + 1
            out.append(UNKNOWN)
            word.unknown = True
            return end + 1
        mv = re.match(r"\$([A-Za-z_]\w*|[0-9@*#?$!-])", s[i:])
        if mv:
            name = mv.group(1)
            if name == "IFS":
                raise Refuse("obfuscation.ifs", "$IFS used to hide word boundaries")
            if name in self.vars:
                out.append(self.vars[name])
            else:
                out.append(UNKNOWN)
                word.unknown = True
            return i + mv.end()
        out.append("$")
        return i + 1


def _extract_sub(body: str, i: int) -> str | None:
    try:
        if body.startswith("$(", i):
            return body[i + 2 : _find_close(body, i + 2, "(", ")")]
        end = body.find("`", i + 1)
        return body[i + 1 : end] if end > 0 else None
    except Refuse:
        return body[i:]


def expand_braces(text: str) -> list[str]:
    m = re.search(r"\{([^{}]*,[^{}]*)\}", text)
    if not m:
        return [text]
    out: list[str] = []
    for alt in m.group(1).split(","):
        out.extend(expand_braces(text[: m.start()] + alt + text[m.end() :]))
        if len(out) > 64:
            break
    return out


def nfkc_suspicious(text: str) -> bool:
    """Text that changes under NFKC normalisation hides look-alike (fullwidth) characters."""
    return unicodedata.normalize("NFKC", text) != text
