"""Shell-policy handlers for database clients: `redis-cli`, `psql` and the PostgreSQL tools.

A command a client reads from stdin or a file cannot be seen and waits for a person; SQL that
runs programs, reads or writes server files or grants rights is refused, and so are commands
that delete every key or table; reads pass, maintenance and targeted kills are medium.
"""

from __future__ import annotations

import re

from remed_daemon.guard.paths import HIGH, MEDIUM, UNKNOWN
from remed_daemon.guard.shell.operands import Ctx, note_writes, url_is_local
from remed_daemon.guard.shell.parse import Cmd, Refuse, Word


def check_redis_cli(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    k = 0
    words = [w.text for w in args]
    while k < len(words) and words[k].startswith("-"):
        t = words[k]
        if t in ("-h",) and k + 1 < len(words):
            if not url_is_local(words[k + 1], ctx.local_hosts):
                ctx.add(HIGH, "network.remote_db", f"redis-cli -h {words[k + 1]}")
            k += 2
            continue
        if t in ("-u",) and k + 1 < len(words):
            k += 2
            continue
        if t in ("-p", "-a", "-n", "--user", "--pass", "-r", "-i", "--tls", "--cacert"):
            k += 2 if t not in ("--tls",) else 1
            continue
        if t in ("--eval", "-x", "--rdb", "--pipe", "--functions-rdb"):
            raise Refuse("shell.inline_code", f"redis-cli {t}")
        k += 1
    ops = [w.upper() for w in words[k:]]
    if not ops:
        if cmd.pipe_in or cmd.heredoc_in or ctx.stdin_data:
            ctx.add(HIGH, "db.stdin", "redis-cli reads commands from stdin")
            return
        raise Refuse("shell.interactive", "redis-cli without a command is interactive")
    verb = ops[0]
    arg1 = ops[1] if len(ops) > 1 else ""
    if verb in ("FLUSHALL", "FLUSHDB", "SWAPDB"):
        raise Refuse("destructive.data", f"redis-cli {verb} deletes every key")
    if verb in ("DEBUG", "MODULE", "SLAVEOF", "REPLICAOF", "MIGRATE", "EVAL", "EVALSHA",
                "SCRIPT", "FUNCTION", "FCALL", "ACL", "SYNC", "PSYNC", "MONITOR"):  # fmt: skip
        raise Refuse("exec.escape", f"redis-cli {verb}")
    if verb == "CONFIG":
        if arg1 == "SET":
            param = ops[2] if len(ops) > 2 else ""
            if param in ("DIR", "DBFILENAME", "LOGFILE", "APPENDFILENAME", "APPENDDIRNAME"):
                raise Refuse("persistence.control_file", f"redis CONFIG SET {param}: file write")
            ctx.add(MEDIUM, "db.config", f"redis-cli CONFIG SET {param}")
            return
        if arg1 in ("GET", "HELP"):
            return
        ctx.add(MEDIUM, "db.config", f"redis-cli CONFIG {arg1}")
        return
    if verb in ("PING", "INFO", "DBSIZE", "TTL", "PTTL", "TYPE", "EXISTS", "GET", "SCAN",
                "SLOWLOG", "LATENCY", "MEMORY", "CLUSTER", "ROLE", "TIME", "LASTSAVE",
                "LLEN", "HLEN", "SCARD", "ZCARD", "STRLEN", "OBJECT", "COMMAND",
                "HELLO"):  # fmt: skip
        if (verb == "SLOWLOG" and arg1 == "RESET") or (verb == "LATENCY" and arg1 == "RESET"):
            ctx.add(MEDIUM, "db.reset_stats", f"redis-cli {verb} RESET")
        if verb == "MEMORY" and arg1 == "PURGE":
            ctx.add(MEDIUM, "db.memory", "redis-cli MEMORY PURGE")
        return
    if verb == "CLIENT":
        if arg1 in ("KILL", "PAUSE", "NO-EVICT"):
            ctx.add(MEDIUM, "kill.targeted", f"redis-cli CLIENT {arg1}")
        return
    if verb in ("BGSAVE", "BGREWRITEAOF", "SAVE"):
        ctx.add(MEDIUM, "db.persist", f"redis-cli {verb}")
        return
    if verb == "SHUTDOWN":
        if "NOSAVE" in ops:
            ctx.add(HIGH, "destructive.data", "redis SHUTDOWN NOSAVE loses data")
        else:
            ctx.add(MEDIUM, "service.stop", "redis-cli SHUTDOWN")
        return
    if verb in ("KEYS",):
        ctx.add(MEDIUM, "db.slow", "KEYS blocks redis")
        return
    ctx.add(HIGH, "db.write", f"redis-cli {verb} changes data")


_SQL_REJECT = re.compile(
    r"\bCOPY\b[^;]*\bPROGRAM\b|\bpg_read_(binary_)?file\b|\blo_(import|export)\b|"
    r"\bpg_ls_dir\b|\bdblink\w*\b|\bpg_execute_server_program\b|\bCREATE\s+(OR\s+REPLACE\s+)?"
    r"(FUNCTION|EXTENSION|LANGUAGE|PROCEDURE|TRIGGER)\b|\bDO\s+\$|\bpg_file_write\b|"
    r"\bALTER\s+(USER|ROLE)\b|\bCREATE\s+(USER|ROLE)\b|\bGRANT\b|\bpg_authid\b|\bpg_shadow\b|"
    r"\bpg_user_mapping",
    re.I,
)
_SQL_DESTROY = re.compile(r"\b(DROP|TRUNCATE)\b|\bDELETE\s+FROM\b", re.I)
_SQL_KILL = re.compile(r"\bpg_(terminate|cancel)_backend\b", re.I)
_SQL_READ = re.compile(r"^\s*(SELECT|SHOW|EXPLAIN|WITH|TABLE|VALUES)\b", re.I)
_SQL_MAINT = re.compile(r"^\s*(VACUUM|ANALYZE|REINDEX|CHECKPOINT|RESET|DISCARD|"
                        r"SELECT\s+pg_reload_conf)\b", re.I)  # fmt: skip


def _sql(sql: str, ctx: Ctx, prog: str) -> None:
    if UNKNOWN in sql:
        ctx.add(HIGH, "db.unknown", f"{prog} SQL built at run time")
    if "\\!" in sql or re.search(r"\\(o|g|w|copy|i|ir|setenv|cd)\b", sql):
        raise Refuse("shell.inline_code", f"{prog} meta-command runs programs or files")
    if _SQL_REJECT.search(sql):
        raise Refuse("exec.escape", f"{prog}: SQL that runs programs, reads files or grants")
    if re.search(r"\bCOPY\b[^;]*\bTO\b", sql, re.I):
        raise Refuse("exfil.file", f"{prog}: COPY TO writes server files")
    for stmt in [s for s in sql.split(";") if s.strip()]:
        if _SQL_DESTROY.search(stmt):
            if re.search(r"\bDROP\s+(DATABASE|SCHEMA|TABLE)\b|\bTRUNCATE\b", stmt, re.I):
                raise Refuse("destructive.data", f"{prog}: {stmt.strip()[:60]}")
            ctx.add(HIGH, "destructive.data", f"{prog}: {stmt.strip()[:60]}")
        elif _SQL_KILL.search(stmt):
            ctx.add(MEDIUM, "kill.targeted", f"{prog}: {stmt.strip()[:60]}")
        elif _SQL_READ.search(stmt):
            continue
        elif _SQL_MAINT.search(stmt):
            ctx.add(MEDIUM, "db.maintenance", f"{prog}: {stmt.strip()[:60]}")
        elif re.match(r"^\s*ALTER\s+SYSTEM\b", stmt, re.I):
            ctx.add(MEDIUM, "db.config", f"{prog}: {stmt.strip()[:60]}")
        else:
            ctx.add(HIGH, "db.write", f"{prog}: {stmt.strip()[:60]}")


def check_psql(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    sqls: list[str] = []
    it = iter(args)
    for w in it:
        t = w.text
        if t in ("-c", "--command"):
            nxt = next(it, None)
            if nxt is not None:
                sqls.append(nxt.text)
        elif t.startswith("--command="):
            sqls.append(t.split("=", 1)[1])
        elif t.startswith("-c") and len(t) > 2:
            sqls.append(t[2:])
        elif t in ("-f", "--file"):
            ctx.add(HIGH, "shell.script_file", "psql -f runs a SQL file the guard cannot see")
            next(it, None)
        elif t in ("-o", "--output", "-L", "--log-file"):
            nxt = next(it, None)
            if nxt is not None:
                note_writes([nxt], ctx, prog="psql -o")
        elif t in ("-h", "--host"):
            nxt = next(it, None)
            if (
                nxt is not None
                and not url_is_local(nxt.text, ctx.local_hosts)
                and not (nxt.text.startswith("/"))
            ):
                ctx.add(HIGH, "network.remote_db", f"psql -h {nxt.text}")
        elif t in ("-U", "-d", "-p", "-v", "--set", "-P", "-F", "-R", "--username", "--dbname",
                   "--port"):  # fmt: skip
            nxt = next(it, None)
            if nxt is not None and t in ("-d", "--dbname") and "host=" in nxt.text:
                ctx.add(HIGH, "network.remote_db", "psql connection string")
    if not sqls:
        if cmd.pipe_in or cmd.heredoc_in or ctx.stdin_data:
            ctx.add(HIGH, "db.stdin", "psql reads SQL from stdin")
            return
        if name == "psql":
            raise Refuse("shell.interactive", "psql without -c is interactive")
    for sql in sqls:
        _sql(sql, ctx, name)


def check_pg_tools(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    ops = [w.text for w in args if not w.text.startswith("-")]
    if name in ("dropdb", "dropuser", "pg_resetwal", "pg_resetxlog"):
        raise Refuse("destructive.data", f"{name} destroys data or access")
    if name in ("pg_ctl", "pg_ctlcluster"):
        action = next((o for o in ops if o in ("start", "stop", "restart", "reload", "status",
                                                "promote", "kill", "init",
                                                "initdb")), "")  # fmt: skip
        if action in ("status", "reload", "restart", "start"):
            ctx.effects.services.add("postgresql")
            return
        if action == "stop":
            ctx.add(MEDIUM, "service.stop", f"{name} stop")
            return
        ctx.add(HIGH, "db.other", f"{name} {action}")
        return
    if name == "pg_dumpall":
        raise Refuse("secrets.read", "pg_dumpall dumps role password hashes")
    if name == "pg_dump":
        for k, w in enumerate(args):
            if w.text in ("-f", "--file") and k + 1 < len(args):
                note_writes([args[k + 1]], ctx, prog="pg_dump")
        ctx.add(MEDIUM, "db.dump", "pg_dump")
        return
    if name in ("vacuumdb", "reindexdb", "clusterdb"):
        ctx.add(MEDIUM, "db.maintenance", name)
        return
    ctx.add(HIGH, "db.other", name)
