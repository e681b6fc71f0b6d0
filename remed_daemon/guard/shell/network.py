"""Shell-policy handlers for programs that talk to the network or change it.

`curl`/`wget` may only call the host itself or an incident host (no downloads, no uploads),
`nc` only probe a local port; firewall tools (`iptables` and its variants, `nft`, `ufw`,
`firewall-cmd`) must not flush rules or lock out ssh; `ip`, `ifconfig`, `tc` and `nmcli` must not
take the host off the network; `openssl` must not encode, decode, print keys or listen.
"""

from __future__ import annotations

import re

from remed_daemon.guard.paths import (
    HIGH,
    MEDIUM,
    UNKNOWN,
    category,
    normalize,
    read_level,
    write_level,
)
from remed_daemon.guard.shell.operands import (
    Ctx,
    flags_of,
    note_writes,
    operands_of,
    url_is_local,
)
from remed_daemon.guard.shell.parse import Cmd, Refuse, Word


def check_curl(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    value_opts = {
        "curl": set("XdFTouHAebcKxwmrEyYzCUQ") | {"--data", "--data-binary", "--data-raw",
                 "--data-urlencode", "--form", "--upload-file", "--output", "--header",
                 "--request", "--user", "--proxy", "--config", "--resolve", "--connect-to",
                 "--max-time", "--connect-timeout", "--retry", "--json", "--url", "--cookie",
                 "--cookie-jar", "--write-out", "--user-agent", "--referer", "--cert", "--key",
                 "--cacert", "--interface", "--unix-socket", "--abstract-unix-socket",
                 "--retry-delay", "--retry-max-time", "--limit-rate", "--range"},
        "wget": set("OoaiePTtwUQ") | {"--output-document", "--post-data", "--post-file",
                 "--body-data", "--body-file", "--method", "--header", "--execute",
                 "--input-file", "--timeout", "--tries", "--user", "--password", "--proxy",
                 "--output-file", "--append-output", "--directory-prefix", "--user-agent"},
    }[name]  # fmt: skip
    urls: list[str] = []
    method_write = False
    it = iter(args)
    for w in it:
        t = w.text
        opt, eq, inline = t.partition("=") if t.startswith("--") else (t, "", "")
        if (t.startswith("--") and opt in value_opts) or (
            t.startswith("-") and not t.startswith("--") and len(t) == 2 and t[1] in value_opts
        ):
            value = inline if eq else (nxt.text if (nxt := next(it, None)) else "")
            _curl_option(name, opt, value, ctx)
            if opt in ("-X", "--request", "--method") and value.upper() not in ("GET", "HEAD"):
                method_write = True
            if opt in ("-d", "--data", "--data-binary", "--data-raw", "--data-urlencode",
                       "-F", "--form", "-T", "--upload-file", "--json", "--post-data",
                       "--post-file", "--body-data", "--body-file"):  # fmt: skip
                method_write = True
            if opt == "--url":
                urls.append(value)
            continue
        if t.startswith("-") and len(t) > 1:
            if name == "curl" and t.startswith("-") and not t.startswith("--"):
                last = t[-1]
                if last in value_opts and len(t) > 2:
                    value = nxt.text if (nxt := next(it, None)) else ""
                    _curl_option(name, "-" + last, value, ctx)
                    if last in "dFT":
                        method_write = True
            continue
        urls.append(t if not w.unknown else UNKNOWN)
    for url in urls:
        if not url_is_local(url, ctx.local_hosts):
            raise Refuse(
                "exfil.network",
                f"{name} to {url.replace(UNKNOWN, '$?')[:80]}: only the host itself may be "
                "called (no downloads, no uploads)",
            )
    if cmd.pipe_out:
        pass  # what it pipes into is judged on its own (a shell there is refused)
    if method_write:
        ctx.add(MEDIUM, "http.local_write", f"{name} sends a write request to a local URL")


def _curl_option(name: str, opt: str, value: str, ctx: Ctx) -> None:
    bad = {
        "curl": {"-K", "--config", "-x", "--proxy", "--resolve", "--connect-to",
                 "--unix-socket", "--abstract-unix-socket", "--preproxy"},
        "wget": {"-e", "--execute", "-i", "--input-file", "--proxy"},
    }[name]  # fmt: skip
    if opt in bad:
        raise Refuse("exfil.network", f"{name} {opt}: redirects or scripts the transfer")
    if opt in ("-F", "--form") and re.search(r"=[@<]", value):
        value = "@" + re.split(r"=[@<]", value, maxsplit=1)[1].split(";")[0]
    if value.startswith("@") or opt in ("-T", "--upload-file", "--post-file", "--body-file"):
        path = normalize(value.lstrip("@"), "/root")
        level, rule, detail = read_level(path)
        if level:
            raise Refuse(rule, detail)
        if path and category(path) not in ("tmp", "devnull"):
            ctx.add(HIGH, "http.upload_file", f"{name} uploads {path}")
    if opt in ("-o", "--output", "-O", "--output-document") and name in ("curl", "wget"):
        if value not in ("-", "") and not (name == "curl" and opt == "-O"):
            path = normalize(value, "/root")
            level, rule = write_level(path)
            if category(path) != "devnull":
                ctx.add(max(level, MEDIUM), "download.write", f"{name} writes {path or value}")
    if opt in ("-H", "--header") and UNKNOWN in value:
        raise Refuse("exfil.network", f"{name} header carries run-time data")


def check_nc(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    flags = flags_of(args)
    ops = operands_of(args, "wpsqiIOTxX")
    if "-z" in flags and not flags & {"-e", "-c", "-l", "--exec", "--sh-exec", "--lua-exec"}:
        if ops and url_is_local(ops[0].text, ctx.local_hosts) and not cmd.pipe_in:
            return
    raise Refuse("exfil.network", f"{name}: raw network connections (exfiltration, shells)")


def check_firewall(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    text = [w.text for w in args]
    if any(w.unknown for w in args):
        raise Refuse("firewall.unknown", f"{name} with run-time arguments")
    if name.startswith(("iptables", "ip6tables", "ebtables", "arptables")):
        if name.endswith("-restore"):
            ctx.add(HIGH, "firewall.replace", f"{name} replaces the whole rule set")
            return
        if name.endswith("-save"):
            return
        flags = set(text)
        if flags & {"-F", "--flush", "-X", "--delete-chain"} or any(
            re.fullmatch(r"-[a-zA-Z]*F[a-zA-Z]*", t) and t not in ("-F",) for t in text
        ):
            raise Refuse("destructive.firewall_flush", f"{name} flushes rules or chains")
        if flags & {"-P", "--policy"}:
            k = text.index("-P") if "-P" in text else text.index("--policy")
            policy = text[k + 2] if k + 2 < len(text) else ""
            if policy.upper() in ("DROP", "REJECT"):
                raise Refuse("destructive.firewall_lockout", f"{name} default policy {policy}")
            ctx.add(HIGH, "firewall.policy", f"{name} default policy {policy}")
            return
        if flags & {"-L", "-S", "--list", "--list-rules", "-C", "--check", "-nL", "-vnL"} or any(
            re.fullmatch(r"-[nvx]*L[nvx]*", t) for t in text
        ):
            return
        if flags & {"-D", "--delete"}:
            ctx.add(MEDIUM, "firewall.delete_rule", f"{name} deletes one rule")
            return
        if flags & {"-A", "-I", "--append", "--insert", "-R", "--replace"}:
            target = (
                text[text.index("-j") + 1]
                if "-j" in text and text.index("-j") + 1 < len(text)
                else ""
            )
            if target.upper() in ("DROP", "REJECT") and ("22" in text or "ssh" in text):
                raise Refuse("destructive.firewall_lockout", f"{name} blocks ssh")
            if target.upper() in ("DROP", "REJECT") or "22" in text or "ssh" in text:
                ctx.add(HIGH, "firewall.block", f"{name} adds a blocking rule")
            else:
                ctx.add(MEDIUM, "firewall.allow", f"{name} adds a rule")
            return
        ctx.add(HIGH, "firewall.other", f"{name} {' '.join(text)[:60]}")
        return
    if name == "nft":
        flags = flags_of(args)
        if flags & {"-f", "--file"}:
            ctx.add(HIGH, "firewall.replace", "nft -f loads a rule file")
            return
        if flags & {"-i", "--interactive"}:
            raise Refuse("shell.interactive", "nft -i")
        words = " ".join(t for t in text if not t.startswith("-"))
        for stmt in re.split(r"[;\n]", words):
            toks = stmt.split()
            if not toks:
                continue
            verb = toks[0]
            if verb in ("list", "describe", "monitor", "-v"):
                continue
            if verb == "flush":
                raise Refuse("destructive.firewall_flush", f"nft {stmt.strip()}")
            if verb in ("delete", "destroy"):
                if len(toks) >= 2 and toks[1] == "rule" and "handle" not in toks:
                    ctx.add(HIGH, "firewall.delete_rule", f"nft {stmt.strip()}")
                else:
                    ctx.add(MEDIUM, "firewall.delete_rule", f"nft {stmt.strip()}")
                continue
            if verb in ("add", "insert", "create", "replace"):
                if any(t in ("drop", "reject") for t in toks) and ("22" in toks or "ssh" in toks):
                    raise Refuse("destructive.firewall_lockout", f"nft {stmt.strip()}")
                if any(t in ("drop", "reject") for t in toks) or "policy" in toks:
                    ctx.add(HIGH, "firewall.block", f"nft {stmt.strip()}")
                else:
                    ctx.add(MEDIUM, "firewall.allow", f"nft {stmt.strip()}")
                continue
            ctx.add(HIGH, "firewall.other", f"nft {stmt.strip()}")
        return
    if name == "ufw":
        ops = [t for t in text if not t.startswith("-")]
        if not ops or ops[0] in ("status", "show", "version", "app"):
            return
        if ops[0] in ("disable", "reset"):
            raise Refuse("destructive.firewall_flush", f"ufw {ops[0]}")
        if ops[0] == "delete":
            ctx.add(MEDIUM, "firewall.delete_rule", "ufw delete")
            return
        if ops[0] in ("allow",):
            ctx.add(MEDIUM, "firewall.allow", "ufw allow")
            return
        ctx.add(HIGH, "firewall.other", f"ufw {ops[0]}")
        return
    if name == "firewall-cmd":
        joined = " ".join(text)
        if "--panic-on" in joined or ("--set-default-zone" in joined and "drop" in joined):
            raise Refuse("destructive.firewall_lockout", "firewall-cmd panic/drop zone")
        if any(t.startswith(("--list", "--get", "--query", "--state")) for t in text):
            return
        if any(t.startswith(("--remove", "--add")) for t in text):
            ctx.add(MEDIUM, "firewall.change", "firewall-cmd changes a rule")
            return
        ctx.add(HIGH, "firewall.other", "firewall-cmd")


def check_ip(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    ops = [w.text for w in args if not w.text.startswith("-")]
    if name in ("ifdown", "ifconfig") and (name == "ifdown" or "down" in ops):
        raise Refuse("destructive.network", f"{name}: takes an interface down")
    if name in ("ifup", "ifconfig"):
        if name == "ifconfig" and len(ops) <= 1:
            return
        ctx.add(MEDIUM, "network.change", f"{name} {' '.join(ops)}")
        return
    if name == "tc":
        if not ops or ops[-1] in ("show", "list", "ls") or (len(ops) > 1 and ops[1] in (
            "show", "list", "ls")):  # fmt: skip
            return
        if len(ops) > 1 and ops[1] in ("del", "delete"):
            ctx.add(MEDIUM, "network.qdisc_delete", f"tc {' '.join(ops)}")
            return
        ctx.add(HIGH, "network.change", f"tc {' '.join(ops)}")
        return
    if name == "nmcli":
        if any(t in ("down", "off", "delete", "disconnect") for t in ops):
            raise Refuse("destructive.network", "nmcli takes networking down")
        if (
            ops
            and ops[0] in ("general", "g", "device", "d", "connection", "c")
            and (len(ops) < 2 or ops[1] in ("status", "show", "s"))
        ):
            return
        ctx.add(HIGH, "network.change", "nmcli")
        return
    # ip
    if not ops:
        return
    obj = ops[0]
    verb = ops[1] if len(ops) > 1 else "show"
    if obj in ("netns",) or (obj == "vrf" and verb == "exec"):
        raise Refuse("exec.escape", "ip netns: enters other hosts' network namespaces")
    if verb in ("show", "list", "ls", "get", "lst", "sh", "s"):
        return
    if obj.startswith("l") and "down" in ops:
        raise Refuse("destructive.network", "ip link set ... down cuts the host off")
    if verb in ("flush", "f") or (obj.startswith("r") and verb in ("del", "delete") and
                                  "default" in ops):  # fmt: skip
        raise Refuse("destructive.network", f"ip {obj} {verb} cuts the host off")
    if obj.startswith("l") and "up" in ops:
        ctx.add(MEDIUM, "network.link_up", "ip link set ... up")
        return
    ctx.add(HIGH, "network.change", f"ip {' '.join(ops)[:60]}")


def check_openssl(name: str, args: list[Word], cmd: Cmd, ctx: Ctx) -> None:
    if not args:
        raise Refuse("shell.interactive", "openssl without a command")
    sub = args[0].text
    rest = args[1:]
    texts = [w.text for w in rest]
    if sub in ("enc", "base64", "smime", "cms", "pkeyutl", "rsautl") or (
        "-d" in texts and sub in ("enc", "base64")
    ):
        raise Refuse("obfuscation.decode", f"openssl {sub}: encodes or decodes data")
    if sub in ("s_client", "s_time"):
        for k, t in enumerate(texts):
            if t in ("-connect",) and k + 1 < len(texts):
                if not url_is_local(texts[k + 1], ctx.local_hosts):
                    raise Refuse("exfil.network", f"openssl {sub} to {texts[k + 1]}")
        return
    outputs = {"-out", "-keyout"}
    has_out = False
    for k, t in enumerate(texts):
        if k + 1 >= len(texts):
            break
        if t in outputs:
            has_out = True
            note_writes([rest[k + 1]], ctx, prog=f"openssl {sub}", backup=True)
    if sub in ("rsa", "pkey", "ec", "pkcs12", "pkcs8", "dsa") and not has_out:
        if "-noout" not in texts or "-text" in texts:
            raise Refuse("secrets.read", f"openssl {sub} prints private key material")
    if sub not in ("req", "x509", "genrsa", "genpkey", "ecparam", "verify", "version", "rand",
                   "dgst", "ciphers", "list", "dhparam", "crl", "rsa", "pkey", "ec",
                   "s_server", "speed", "pkcs12", "pkcs8"):  # fmt: skip
        ctx.add(HIGH, "shell.unknown_program", f"openssl {sub}")
    if sub == "s_server":
        raise Refuse("exfil.network", "openssl s_server listens for connections")
