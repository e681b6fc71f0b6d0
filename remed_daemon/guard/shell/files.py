"""Shell-policy handlers for programs that read or change files.

Text tools that read their operands (`grep`, `cat`, `head`, `tail`, `sed`, `awk`; `sed -i`
writes them) and the programs that delete, write, copy, link, re-permission or archive files
(`rm`, `find`, `chmod`/`chown`, `setfacl`, `truncate`, `dd`, `tee`, `touch`/`mkdir`,
`cp`/`mv`/`ln`/`install`/`rsync`, `tar`, `zip`, `gzip` and friends). Every path goes through
`note_reads`, `note_writes` or `note_deletes`, so the path rules stay in `guard.paths`.
"""

from __future__ import annotations

import re

from remed_daemon.guard.paths import (
    HIGH,
    MEDIUM,
    UNKNOWN,
    category,
    delete_level,
    is_secret,
    mode_level,
    read_level,
    write_level,
)
from remed_daemon.guard.shell.operands import (
    Ctx,
    flags_of,
    note_deletes,
    note_reads,
    note_writes,
    operands_of,
    paths_of,
)
from remed_daemon.guard.shell.parse import Cmd, Refuse, Word

# grep options that take the next word as their value (`-A 3`, `--max-count 5`).
GREP_VALUE_OPTIONS = frozenset(
    {"-A", "-B", "-C", "-m", "-d", "-D", "--after-context", "--before-context", "--context",
     "--max-count", "--directories", "--devices", "--label", "--include", "--exclude",
     "--exclude-dir", "--exclude-from", "--binary-files", "--color", "--colour",
     "--group-separator"}
)  # fmt: skip


def check_grep_like(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    """grep reads its FILE operands and any -f pattern file; the first operand is the pattern
    unless -e/-f gave one, so `grep -o 'pid=[0-9]*'` reads stdin, not a file named like that."""
    files: list[Word] = []
    pattern_given = recursive = False
    it = iter(args)
    for w in it:
        t = w.text
        if t == "--":
            files.extend(it)
            break
        short = t[1:] if t.startswith("-") and not t.startswith("--") else ""
        # Letters before a value-taking one are flags: -ri, -rl, -rA3 are recursive.
        if t in ("--recursive", "--dereference-recursive") or set(
            re.split("[efABCmdD]", short, maxsplit=1)[0]
        ) & {"r", "R"}:
            recursive = True
        if t in ("-e", "--regexp"):
            pattern_given = True
            next(it, None)
        elif t.startswith("--regexp="):
            pattern_given = True
        elif t in ("-f", "--file"):
            pattern_given = True
            nxt = next(it, None)
            if nxt is not None:
                files.append(nxt)
        elif t.startswith("--file="):
            pattern_given = True
            files.append(Word(t.split("=", 1)[1], w.unknown, w.quoted))
        elif t in GREP_VALUE_OPTIONS:
            next(it, None)
        elif t.startswith("-") and len(t) > 1:
            letters = t[1:] if not t.startswith("--") else ""
            # A bundled -e/-f takes the rest of the word, or the next word, as its value.
            for i, letter in enumerate(letters):
                if letter in "ef":
                    pattern_given = True
                    value = letters[i + 1 :]
                    nxt = Word(value, w.unknown, w.quoted) if value else next(it, None)
                    if letter == "f" and nxt is not None:
                        files.append(nxt)
                    break
                if letter in "ABCmdD":
                    if not letters[i + 1 :]:
                        next(it, None)
                    break
        elif not pattern_given:
            pattern_given = True
        else:
            files.append(w)
    if recursive and not files:
        files.append(Word("."))  # grep -r with no FILE searches the working directory
    note_reads(files, ctx)


def check_cat_like(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    note_reads([w for w in args if not w.text.startswith("-")], ctx)


def check_sed(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    scripts: list[str] = []
    files: list[Word] = []
    in_place = False
    backup = False
    it = iter(args)
    for w in it:
        t = w.text
        if t in ("-e", "--expression"):
            nxt = next(it, None)
            if nxt is not None:
                scripts.append(nxt.text)
        elif t.startswith("--expression="):
            scripts.append(t.split("=", 1)[1])
        elif t in ("-f", "--file") or t.startswith("--file="):
            ctx.add(HIGH, "shell.script_file", "sed -f runs a script file the guard cannot see")
            next(it, None)
        elif t.startswith("--in-place"):
            in_place, backup = True, "=" in t
        elif t.startswith("-") and not t.startswith("--") and len(t) > 1:
            letters = t[1:]
            if "i" in letters:
                in_place = True
                backup = len(letters.split("i", 1)[1]) > 0
            if "e" in letters:
                nxt = next(it, None)
                if nxt is not None:
                    scripts.append(nxt.text)
        elif not scripts:
            scripts.append(t)
        else:
            files.append(w)
    for script in scripts:
        _sed_script(script)
    if in_place:
        note_writes(files, ctx, prog="sed -i", backup=backup)
    else:
        note_reads(files, ctx)


_SED_S = re.compile(r"s(.)(?:\\.|(?!\1).)*\1(?:\\.|(?!\1).)*\1([a-zA-Z0-9]*)")


def _sed_script(script: str) -> None:
    if UNKNOWN in script:
        raise Refuse("obfuscation.variable_command", "sed script from a variable")
    for m in _SED_S.finditer(script):
        if "e" in m.group(2) or "w" in m.group(2):
            raise Refuse("shell.inline_code", "sed s///e or s///w runs commands or writes files")
    rest = _SED_S.sub("", script)
    for part in re.split(r"[;\n{}]", rest):
        part = re.sub(r"^\s*([0-9$]+|/[^/]*/)?(,\s*([0-9$]+|/[^/]*/))?\s*!?\s*", "", part)
        if part[:1] in ("e", "w", "W", "r", "R"):
            raise Refuse("shell.inline_code", f"sed command {part[:20]!r} runs or reads files")


def check_awk(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    program: str | None = None
    files: list[Word] = []
    it = iter(args)
    for w in it:
        t = w.text
        if t in ("-F", "-v"):
            nxt = next(it, None)
            if t == "-v" and nxt is not None and "ENVIRON" in nxt.text:
                raise Refuse("shell.inline_code", "awk with environment tricks")
        elif t == "-f" or t.startswith("--file"):
            ctx.add(HIGH, "shell.script_file", "awk -f runs a program file the guard cannot see")
            next(it, None)
            program = ""
        elif t.startswith("-") and program is None and len(t) > 1:
            continue
        elif program is None:
            program = t
        else:
            files.append(w)
    prog = program or ""
    if UNKNOWN in prog:
        raise Refuse("obfuscation.variable_command", "awk program from a variable")
    if re.search(r"system\s*\(|\|\s*getline|getline\s*<|\|&|print[f]?\b[^;{}]*[|>]\s*\"", prog):
        raise Refuse("shell.inline_code", "awk program runs commands or writes files")
    if "ENVIRON" in prog:
        raise Refuse("secrets.read", "awk reads the environment")
    note_reads(files, ctx)


def check_rm(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    flags = flags_of(args)
    if "--no-preserve-root" in flags:
        raise Refuse("destructive.system_path", "rm --no-preserve-root")
    recursive = bool(flags & {"-r", "-R", "--recursive"}) or (name == "rmdir" and "-p" in flags)
    targets = operands_of(args)
    if not targets:
        return
    note_deletes(targets, ctx, recursive=recursive, prog=name)


def check_find(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    i = 0
    while i < len(args) and args[i].text in ("-H", "-L", "-P", "-O0", "-O1", "-O2", "-O3"):
        i += 1
    roots: list[Word] = []
    while i < len(args) and not args[i].text.startswith(("-", "(", "!", "\\(")):
        roots.append(args[i])
        i += 1
    if not roots:
        roots = [Word(".")]
    expr = args[i:]
    pattern = "*"
    filtered = False
    j = 0
    while j < len(expr):
        t = expr[j].text
        if t in ("-name", "-iname", "-path", "-ipath", "-regex", "-iregex", "-wholename"):
            if j + 1 < len(expr):
                pattern = expr[j + 1].text if t in ("-name", "-iname") else pattern
            filtered = True
        elif t in ("-mtime", "-mmin", "-size", "-newer", "-atime", "-ctime", "-user", "-empty"):
            filtered = True
        j += 1
    base_paths = []
    for _w, p in paths_of(roots, ctx):
        base_paths.append(None if p is None else (p.rstrip("/") + "/" + pattern))
    j = 0
    while j < len(expr):
        t = expr[j].text
        if t == "-delete":
            for root, p in zip(roots, base_paths, strict=True):
                if p is None:
                    raise Refuse(
                        "destructive.unknown_target", "find -delete under a run-time path"
                    )
                level, rule = delete_level(p, recursive=not filtered)
                root_path = root.path(ctx.cwd)
                if not filtered and root_path is not None:
                    level, rule = max((level, rule), delete_level(root_path, recursive=True))
                ctx.add(
                    level, rule, f"find {root.text} -delete ({'filtered' if filtered else 'all'})"
                )
        elif t in ("-exec", "-execdir", "-ok", "-okdir"):
            inner: list[Word] = []
            j += 1
            while j < len(expr) and expr[j].text not in (";", "+", "\\;"):
                w = expr[j]
                if "{}" in w.text:
                    for p in base_paths:
                        inner.append(Word(w.text.replace("{}", p or UNKNOWN), unknown=p is None))
                else:
                    inner.append(w)
                j += 1
            if not inner:
                raise Refuse("shell.syntax", "find -exec without a command")
            # Imported here: the dispatcher imports this module for its handler table.
            from remed_daemon.guard.shell.rules import check_program

            ctx.depth += 1
            try:
                check_program(inner, Cmd(words=inner), ctx)
            finally:
                ctx.depth -= 1
        elif t in ("-fprint", "-fprint0", "-fprintf", "-fls"):
            if j + 1 < len(expr):
                note_writes([expr[j + 1]], ctx, prog="find -fprint")
        j += 1


def check_chmod(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    flags = flags_of(args)
    recursive = bool(flags & {"-R", "--recursive"})
    ops = [w for w in args if not (w.text.startswith("-") and not re.match(r"^-[rwxXst]", w.text))]
    ops = [w for w in ops if w.text != "--"]
    if any(w.text.startswith("--reference") for w in args):
        ops = [Word("0777"), *ops]
    if len(ops) < 2:
        return
    spec, targets = ops[0], ops[1:]
    for _w, path in paths_of(targets, ctx):
        if name == "chmod":
            level, rule, detail = mode_level(path, spec.text, recursive=recursive)
        else:
            level, rule, detail = mode_level(path, "", recursive=recursive, owner_change=True)
        ctx.add(level, rule, f"{name} {spec.text} {detail}")
        ctx.effects.touch(path)


def check_setfacl(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    recursive = bool(flags_of(args) & {"-R", "--recursive"})
    for _w, path in paths_of(operands_of(args, "mMxX")[0:] if args else [], ctx):
        if path is not None and (is_secret(path) or category(path) == "control"):
            raise Refuse("secrets.expose", f"setfacl on {path}")
        level, rule, detail = mode_level(path, "", recursive=recursive)
        ctx.add(max(level, MEDIUM), rule, f"setfacl {detail}")


def check_zip(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    ops = [w for w in args if not w.text.startswith("-")]
    if ops:
        note_writes(ops[:1], ctx, prog=name)
        note_reads(ops[1:], ctx)


def check_truncate(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    for _w, path in paths_of(operands_of(args, "sro"), ctx):
        level, rule = write_level(path)
        if rule == "config.edit":
            level, rule = HIGH, "config.truncate"
        if rule == "data.write":
            level = HIGH
        ctx.add(level, rule, f"truncate {path or '$?'}")
        ctx.effects.touch(path)


def check_dd(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    for w in args:
        key, _, value = w.text.partition("=")
        if key == "of":
            note_writes([Word(value, unknown=w.unknown)], ctx, prog="dd")
        elif key == "if":
            note_reads([Word(value, unknown=w.unknown)], ctx)


def check_tee(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    note_writes(operands_of(args), ctx, prog="tee")


def check_touch_mkdir(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    ops = operands_of(args, "mdrtTgoZ" if name != "touch" else "drt")
    for _w, path in paths_of(ops, ctx):
        level, rule = write_level(path)
        if rule in ("config.edit", "data.write"):
            level = MEDIUM  # creating a directory or an empty file
        ctx.add(level, rule, f"{name} {path or '$?'}")
        ctx.effects.touch(path)


def check_cp_mv(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    if name == "rsync":
        for w in args:
            if not w.text.startswith("-") and (
                "::" in w.text or "://" in w.text or re.match(r"^[^/]*:", w.text)
            ):
                raise Refuse("exfil.network", f"rsync to or from a remote: {w.text}")
            if w.text.startswith(("-e", "--rsh", "--rsync-path")):
                raise Refuse("exec.escape", "rsync with a remote shell or remote program")
    ops = operands_of(args, "tSm" if name != "ln" else "tS")
    target_dir = None
    for k, w in enumerate(args):
        if w.text in ("-t",) and k + 1 < len(args):
            target_dir = args[k + 1]
        elif w.text.startswith("--target-directory="):
            target_dir = Word(w.text.split("=", 1)[1])
    if target_dir is None and len(ops) < 2:
        return
    dest = target_dir if target_dir is not None else ops[-1]
    if name == "install":
        for k, w in enumerate(args[:-1]):
            if w.text in ("-m", "--mode") or w.text.startswith("--mode="):
                mode = w.text.split("=", 1)[1] if "=" in w.text else args[k + 1].text
                level, rule, detail = mode_level(dest.path(ctx.cwd), mode, recursive=False)
                if level >= HIGH:
                    ctx.add(level, rule, f"install {detail}")
    sources = ops if target_dir is not None else ops[:-1]
    backup = any(w.text.startswith(("-b", "--backup")) for w in args)
    if name == "ln":
        for _w, p in paths_of(sources, ctx):
            if p is not None and (category(p) in ("control", "device") or read_level(p)[0]):
                raise Refuse("secrets.read", f"ln exposes {p} through a link")
    elif name == "mv":
        note_deletes(sources, ctx, recursive=True, prog="mv")
        note_reads(sources, ctx)
    else:
        note_reads(sources, ctx)
    dest_path = dest.path(ctx.cwd)
    level, rule = write_level(dest_path)
    if name == "ln" and rule == "data.write":
        level = MEDIUM  # a release switch by symlink
    if rule == "config.edit" and not backup:
        level, rule = HIGH, "config.no_backup"
    ctx.add(level, rule, f"{name} into {dest_path or '$?'}")
    ctx.effects.touch(dest_path)


def check_tar(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    text = " ".join(w.text for w in args)
    if re.search(r"--to-command|--checkpoint-action|--use-compress-program|(^|\s)-I\s|"
                 r"--info-script|--new-volume-script|--rsh-command|-F\s", text):  # fmt: skip
        raise Refuse("shell.inline_code", f"{name} option that runs commands")
    if re.search(r"(^|\s)-?[a-zA-Z]*x", text.split(" ")[0] if args else "") or "--extract" in text:
        ctx.add(HIGH, "archive.extract", f"{name} extracts files over the file system")
        return
    for w in args:
        if ":" in w.text and not w.text.startswith("/"):
            raise Refuse("exfil.network", f"{name} to a remote archive {w.text}")
    note_reads([w for w in args if w.text.startswith("/")], ctx)
    ctx.add(MEDIUM, "archive.create", f"{name} writes an archive")


def check_compress(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    flags = flags_of(args)
    files = operands_of(args, "S")
    if flags & {"-c", "--stdout", "-l", "-t"}:
        note_reads(files, ctx)
        return
    note_deletes(files, ctx, recursive="-r" in flags, prog=name)
    note_reads(files, ctx)
