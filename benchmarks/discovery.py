"""Discovery against the lab fleet: patchpilot vs a bare paramiko loop vs Ansible's package_facts.

Usage (as root, with the lab up: ``patchpilot lab up``)::

    .venv/bin/python benchmarks/discovery.py [--lab-dir DIR] [--entries 100] [--concurrency 10]
        [--rounds 2] [--skip-ansible] [--no-extended]

Prints figures; makes no assertions (the exit status is non-zero only when a contender fails
or disagrees with the others about what it found).

* The inventory has ``--entries`` entries (``e000``...) spread round-robin over the lab's hosts,
  so each lab host is logged into many times at once; sshd's ``MaxStartups`` is raised for this
  with a drop-in (``/etc/ssh/sshd_config.d/90-bench.conf``, left in place) and a SIGHUP.
* Contenders, each run in its own child process so that wall time and controller CPU
  (user + sys of the child and everything it waited for, from ``getrusage(RUSAGE_CHILDREN)``)
  are measured the same way:

  - ``bare``: the floor. A thread pool of ``--concurrency`` threads; per entry one paramiko
    connection (strict host keys, the lab key), one ``dpkg-query``, read everything, close.
  - ``patchpilot``: ``patchpilot.agents.discovery.discover`` with default settings (OS, kernel,
    packages,
    reboot state, plus the extended facts: held packages, apt sources, listening sockets,
    processes using deleted libraries).
  - ``patchpilot-core``: the same with ``discovery.services``, ``.restarts`` and
    ``.apt_sources`` off (held packages still run: they are always collected on Debian).
    ``--no-extended`` runs only this variant.
  - ``bare-nodelay`` (for information): the bare loop with ``TCP_NODELAY`` on its socket, as
    patchpilot's transport sets it.
  - ``ansible``: ``ansible all -m ansible.builtin.package_facts -f CONCURRENCY -o`` from a
    throwaway venv (``/tmp/pp-bench-ansible-venv``, reused) with ansible-core from PyPI, the
    same key and known_hosts, strict host key checking; otherwise Ansible's defaults (no
    pipelining; ControlMaster/ControlPersist on, sockets in a fresh directory per run, closed
    after it). package_facts needs python3-apt on the hosts: it is installed when missing.

* Contenders alternate: round 1 runs them in order, round 2 in reverse, and so on; the
  summary is the median over rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ANSIBLE_VENV = Path("/tmp/pp-bench-ansible-venv")
SSHD_DROPIN = "/etc/ssh/sshd_config.d/90-bench.conf"
SSHD_DROPIN_TEXT = "# patchpilot benchmarks/discovery.py\nMaxStartups 200:30:400\nMaxSessions 50\n"
DPKG_FORMAT = r"${Package}\t${Version}\t${source:Package}\t${source:Version}\n"
RESULT_PREFIX = "RESULT "
TARGET_RATIO = 2.0


# --------------------------------------------------------------------------- children
#
# Each child prints one line "RESULT {json}" on stdout: per-entry outcome and package count,
# plus the in-process time of the work itself (after imports), for the breakdown.


def _child_bare(
    entries: list[dict[str, Any]], concurrency: int, *, nodelay: bool
) -> dict[str, Any]:
    import socket
    from concurrent.futures import ThreadPoolExecutor

    import paramiko

    command = "dpkg-query -W -f=" + shlex.quote(DPKG_FORMAT)

    def one(entry: dict[str, Any]) -> tuple[str, int | None, str | None]:
        client = paramiko.SSHClient()
        try:
            client.load_host_keys(entry["known_hosts"])
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
            sock = None
            if nodelay:
                sock = socket.create_connection((entry["address"], entry["port"]), timeout=30)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client.connect(
                entry["address"],
                port=entry["port"],
                username=entry["user"],
                key_filename=entry["key_file"],
                allow_agent=False,
                look_for_keys=False,
                timeout=30,
                sock=sock,
            )
            _stdin, stdout, stderr = client.exec_command(command, timeout=60)
            out = stdout.read()
            stderr.read()
            status = stdout.channel.recv_exit_status()
            if status != 0:
                return entry["name"], None, f"dpkg-query exited {status}"
            return entry["name"], out.count(b"\n"), None
        except Exception as exc:
            return entry["name"], None, f"{type(exc).__name__}: {exc}"
        finally:
            client.close()

    start, cpu = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        results = list(pool.map(one, entries))
    return {
        "work_wall": time.perf_counter() - start,
        "work_cpu": time.process_time() - cpu,
        "entries": {name: {"packages": n, "error": err} for name, n, err in results},
    }


def _child_patchpilot(inventory: Path, concurrency: int, *, extended: bool) -> dict[str, Any]:
    from patchpilot.agents.discovery import discover
    from patchpilot.core.inventory import load_inventory, select_hosts
    from patchpilot.core.logging import configure_logging
    from patchpilot.core.settings import load_settings

    configure_logging("warning")  # as the CLI does; the default structlog config prints info
    overrides: dict[str, Any] = {"home": inventory.parent / "pp-home", "concurrency": concurrency}
    if not extended:
        overrides["discovery"] = {"services": False, "restarts": False, "apt_sources": False}
    settings = load_settings(**overrides)
    hosts = select_hosts(load_inventory(inventory), None, None)
    start, cpu = time.perf_counter(), time.process_time()
    outcomes = discover(hosts, settings)
    return {
        "work_wall": time.perf_counter() - start,
        "work_cpu": time.process_time() - cpu,
        "entries": {
            o.host: {
                "packages": len(o.packages) if o.ok else None,
                "error": o.error,
                "warnings": list(o.warnings),
            }
            for o in outcomes
        },
    }


def run_child(args: argparse.Namespace) -> int:
    """``--contender NAME``: run one contender in this (child) process, print RESULT."""
    work = Path(args.workdir)
    if args.contender in ("bare", "bare-nodelay"):
        entries = json.loads((work / "entries.json").read_text(encoding="utf-8"))
        result = _child_bare(entries, args.concurrency, nodelay=args.contender == "bare-nodelay")
    elif args.contender in ("patchpilot", "patchpilot-core"):
        result = _child_patchpilot(
            work / "inventory.yaml", args.concurrency, extended=args.contender == "patchpilot"
        )
    else:
        raise SystemExit(f"unknown contender {args.contender!r}")
    sys.stdout.write(RESULT_PREFIX + json.dumps(result) + "\n")
    return 0


# --------------------------------------------------------------------------- preparation


def _wait_port(port: int, timeout: float = 15.0) -> None:
    """Until sshd on 127.0.0.1:port accepts and sends its banner."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                if sock.recv(64).startswith(b"SSH-"):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"sshd on 127.0.0.1:{port} did not come back after the reload")
        time.sleep(0.1)


def prepare_sshd(lab: Any, hosts: Sequence[Any]) -> None:
    """Raise MaxStartups/MaxSessions in every host (idempotent) and reload sshd."""
    text = shlex.quote(SSHD_DROPIN_TEXT)
    cmd = (
        f"if printf %s {text} | cmp -s - {SSHD_DROPIN}; then echo unchanged; else "
        f"printf %s {text} > {SSHD_DROPIN}.tmp && mv {SSHD_DROPIN}.tmp {SSHD_DROPIN} "
        "&& /usr/sbin/sshd -t && kill -HUP $(cat /run/sshd.pid) && echo reloaded; fi"
    )
    for host in hosts:
        result = lab.exec(host.name, ["sh", "-c", cmd])
        if result.returncode != 0:
            raise SystemExit(f"{host.name}: cannot set up {SSHD_DROPIN}: {result.stderr.strip()}")
        state = result.stdout.strip()
        if state == "reloaded":
            time.sleep(0.3)  # let the old listener go before probing
        _wait_port(host.port)
        print(f"  {host.name}: sshd {SSHD_DROPIN} {state}")


def prepare_python_apt(lab: Any, hosts: Sequence[Any]) -> None:
    """Install python3-apt in every host when missing (ansible's package_facts needs it)."""
    install = [
        "env",
        "DEBIAN_FRONTEND=noninteractive",
        "apt-get",
        "install",
        "-y",
        "-q",
        "--no-install-recommends",
        "python3-apt",
    ]
    for host in hosts:
        probe = lab.exec(host.name, ["/usr/bin/python3", "-c", "import apt_pkg"])
        if probe.returncode == 0:
            print(f"  {host.name}: python3-apt present")
            continue
        result = lab.exec(host.name, install, timeout=900)
        if result.returncode != 0:
            update = lab.exec(host.name, ["apt-get", "update", "-q"], timeout=900)
            if update.returncode != 0:
                raise SystemExit(f"{host.name}: apt-get update failed: {update.stderr.strip()}")
            result = lab.exec(host.name, install, timeout=900)
        if result.returncode != 0:
            raise SystemExit(f"{host.name}: cannot install python3-apt: {result.stderr.strip()}")
        print(f"  {host.name}: python3-apt installed")


def prepare_ansible() -> str:
    """Create (or reuse) the throwaway venv with ansible-core; return its version."""
    ansible = ANSIBLE_VENV / "bin" / "ansible"
    if not ansible.exists():
        print(f"  creating {ANSIBLE_VENV} and installing ansible-core from PyPI ...")
        subprocess.run([sys.executable, "-m", "venv", str(ANSIBLE_VENV)], check=True)
        subprocess.run(
            [str(ANSIBLE_VENV / "bin" / "pip"), "install", "-q", "ansible-core"], check=True
        )
    out = subprocess.run(
        [str(ANSIBLE_VENV / "bin" / "python"), "-c", "import ansible; print(ansible.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def write_inventories(lab: Any, hosts: Sequence[Any], entries: int, work: Path) -> list[str]:
    """patchpilot YAML, Ansible YAML and a JSON list (for the bare loop); return entry names."""
    import yaml

    names: list[str] = []
    pp_hosts: dict[str, Any] = {}
    ans_hosts: dict[str, Any] = {}
    flat: list[dict[str, Any]] = []
    width = max(3, len(str(entries - 1)))
    for i in range(entries):
        host = hosts[i % len(hosts)]
        name = f"e{i:0{width}d}"
        names.append(name)
        pp_hosts[name] = {"address": host.address, "port": host.port}
        ans_hosts[name] = {"ansible_host": host.address, "ansible_port": host.port}
        flat.append(
            {
                "name": name,
                "address": host.address,
                "port": host.port,
                "user": "lab",
                "key_file": str(lab.key_file),
                "known_hosts": str(lab.known_hosts_path),
            }
        )
    pp_inventory = {
        "defaults": {
            "user": "lab",
            "key_file": str(lab.key_file),
            "known_hosts": str(lab.known_hosts_path),
        },
        "hosts": pp_hosts,
    }
    common_args = (
        f"-o UserKnownHostsFile={lab.known_hosts_path} -o StrictHostKeyChecking=yes "
        "-o IdentitiesOnly=yes"
    )
    ans_inventory = {
        "all": {
            "hosts": ans_hosts,
            "vars": {
                "ansible_user": "lab",
                "ansible_ssh_private_key_file": str(lab.key_file),
                "ansible_ssh_common_args": common_args,
                "ansible_python_interpreter": "/usr/bin/python3",
            },
        }
    }
    (work / "inventory.yaml").write_text(yaml.safe_dump(pp_inventory, sort_keys=False))
    (work / "ansible-inventory.yaml").write_text(yaml.safe_dump(ans_inventory, sort_keys=False))
    (work / "entries.json").write_text(json.dumps(flat))
    (work / "ansible.cfg").write_text("[defaults]\n")  # ignore any ansible.cfg elsewhere
    return names


# --------------------------------------------------------------------------- measurement


def _cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _measure(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, str, str, int]:
    cpu0 = _cpu_children()
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, check=False)
    wall = time.perf_counter() - start
    cpu = _cpu_children() - cpu0
    return wall, cpu, proc.stdout, proc.stderr, proc.returncode


def _close_control_masters(control_dir: Path) -> None:
    """Ask the ControlPersist ssh masters Ansible left behind to exit (by their sockets)."""
    for sock in control_dir.iterdir():
        subprocess.run(
            ["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "bench"],
            capture_output=True,
            check=False,
        )


def _parse_ansible(stdout: str) -> dict[str, dict[str, Any]]:
    """``NAME | SUCCESS => {json}`` lines of ``ansible -o`` into per-entry outcomes."""
    entries: dict[str, dict[str, Any]] = {}
    for line in stdout.splitlines():
        name, sep, rest = line.partition(" | ")
        if not sep:
            continue
        status, _, payload = rest.partition(" => ")
        if status.strip() != "SUCCESS":
            entries[name] = {"packages": None, "error": line[:300]}
            continue
        try:
            packages = json.loads(payload)["ansible_facts"]["packages"]
        except (ValueError, KeyError) as exc:
            entries[name] = {"packages": None, "error": f"unparsable output: {exc}"}
            continue
        count = sum(len(versions) for versions in packages.values())
        entries[name] = {"packages": count, "error": None}
    return entries


def run_contender(name: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Run one contender as a child process; return its figures and per-entry outcomes."""
    env = dict(os.environ)
    if name == "ansible":
        control_dir = Path(tempfile.mkdtemp(prefix="cp-", dir=work))
        env.update(
            ANSIBLE_CONFIG=str(work / "ansible.cfg"),
            ANSIBLE_HOME=str(work / "ansible-home"),
            ANSIBLE_LOCAL_TEMP=str(work / "ansible-tmp"),
            ANSIBLE_SSH_CONTROL_PATH_DIR=str(control_dir),
            ANSIBLE_HOST_KEY_CHECKING="True",
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_LOAD_CALLBACK_PLUGINS="0",
        )
        env.pop("SSH_AUTH_SOCK", None)  # the lab key only
        argv = [
            str(ANSIBLE_VENV / "bin" / "ansible"),
            "all",
            "-i",
            str(work / "ansible-inventory.yaml"),
            "-m",
            "ansible.builtin.package_facts",
            "-f",
            str(args.concurrency),
            "-o",
        ]
        try:
            wall, cpu, out, err, rc = _measure(argv, env, work)
        finally:
            _close_control_masters(control_dir)
        entries = _parse_ansible(out)
        work_wall = work_cpu = None
    else:
        argv = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--contender",
            name,
            "--workdir",
            str(work),
            "--concurrency",
            str(args.concurrency),
        ]
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        wall, cpu, out, err, rc = _measure(argv, env, ROOT)
        lines = [ln for ln in out.splitlines() if ln.startswith(RESULT_PREFIX)]
        result = json.loads(lines[-1][len(RESULT_PREFIX) :]) if lines else {"entries": {}}
        entries = result["entries"]
        work_wall, work_cpu = result.get("work_wall"), result.get("work_cpu")
    return {
        "name": name,
        "wall": wall,
        "cpu": cpu,
        "work_wall": work_wall,
        "work_cpu": work_cpu,
        "rc": rc,
        "stderr": err,
        "entries": entries,
    }


def check(run: dict[str, Any], names: list[str], reference: dict[str, int] | None) -> list[str]:
    """Problems with a run: a failed child, a missing or failed entry, a package count that
    differs from the bare loop's (Ansible excepted: python-apt counts differently)."""
    problems: list[str] = []
    if run["rc"] != 0:
        tail = run["stderr"].strip().splitlines()[-3:]
        problems.append(f"exit status {run['rc']}: {' / '.join(tail)}")
    for name in names:
        entry = run["entries"].get(name)
        if entry is None:
            problems.append(f"{name}: no result")
        elif entry["error"] or entry["packages"] is None:
            problems.append(f"{name}: {entry['error']}")
        elif (
            reference is not None
            and run["name"] != "ansible"
            and name in reference
            and entry["packages"] != reference[name]
        ):
            problems.append(
                f"{name}: {entry['packages']} packages, bare loop saw {reference[name]}"
            )
    return problems


# --------------------------------------------------------------------------- report


def _fmt(value: float | None, spec: str = "7.2f") -> str:
    return "      -" if value is None else format(value, spec)


def print_table(runs: Sequence[dict[str, Any]], entries: int) -> None:
    print(
        f"  {'contender':<16} {'wall s':>7} {'CPU s':>7} {'entries/s':>9} "
        f"{'work wall':>9} {'work CPU':>9}"
    )
    for run in runs:
        print(
            f"  {run['name']:<16} {run['wall']:7.2f} {run['cpu']:7.2f} "
            f"{entries / run['wall']:9.1f} {_fmt(run['work_wall'], '9.2f')} "
            f"{_fmt(run['work_cpu'], '9.2f')}"
        )


def _ratio(a: float, b: float) -> str:
    return f"{a / b:5.2f}x" if b > 0 else "   n/a"


def summary(all_runs: dict[str, list[dict[str, Any]]], entries: int) -> bool:
    """Print medians and ratios; return whether patchpilot is within the target of the floor."""
    med = {
        name: {key: statistics.median(r[key] for r in runs) for key in ("wall", "cpu")}
        | {
            key: (
                statistics.median(r[key] for r in runs)
                if all(r[key] is not None for r in runs)
                else None
            )
            for key in ("work_wall", "work_cpu")
        }
        for name, runs in all_runs.items()
    }
    print("\nSummary (median over rounds)")
    print_table([{"name": n} | m for n, m in med.items()], entries)
    bare = med.get("bare")
    met = True
    if bare is not None:
        print(f"\n  ratios to the bare loop (target: within {TARGET_RATIO:g}x in wall and CPU)")
        for name in ("patchpilot", "patchpilot-core"):
            if name not in med:
                continue
            m = med[name]
            ok = m["wall"] <= TARGET_RATIO * bare["wall"] and m["cpu"] <= TARGET_RATIO * bare["cpu"]
            if name == "patchpilot":
                met = ok
            extra = ""
            if m["work_wall"] and bare["work_wall"]:
                extra = (
                    f"   (work only: wall {_ratio(m['work_wall'], bare['work_wall'])}, "
                    f"CPU {_ratio(m['work_cpu'], bare['work_cpu'])})"
                )
            print(
                f"  {name:<16} wall {_ratio(m['wall'], bare['wall'])}  "
                f"CPU {_ratio(m['cpu'], bare['cpu'])}  -> "
                f"{'target met' if ok else 'target MISSED'}{extra}"
            )
    if "ansible" in med:
        for name in ("patchpilot", "patchpilot-core"):
            if name in med:
                a, p = med["ansible"], med[name]
                print(
                    f"  ansible/{name:<16} wall {_ratio(a['wall'], p['wall'])}  "
                    f"CPU {_ratio(a['cpu'], p['cpu'])}"
                )
    return met


def run_rounds(
    args: argparse.Namespace, contenders: list[str], work: Path, names: list[str]
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, int] | None, bool]:
    """Run every contender ``args.rounds`` times, alternating the order; print each round."""
    all_runs: dict[str, list[dict[str, Any]]] = {name: [] for name in contenders}
    reference: dict[str, int] | None = None
    failed = False
    for round_no in range(args.rounds):
        order = contenders if round_no % 2 == 0 else contenders[::-1]
        print(f"\nRound {round_no + 1}: {' -> '.join(order)}")
        runs = []
        for name in order:
            run = run_contender(name, args, work)
            if name == "bare" and reference is None:
                reference = {
                    n: e["packages"] for n, e in run["entries"].items() if e["packages"] is not None
                }
            problems = check(run, names, reference if name != "bare" else None)
            if problems:
                failed = True
                print(f"  ! {name}: {len(problems)} problem(s): {'; '.join(problems[:5])}")
            warnings = {w for e in run["entries"].values() for w in e.get("warnings") or () if w}
            if warnings:
                print(f"  ! {name}: warnings: {'; '.join(sorted(warnings)[:3])}")
            runs.append(run)
            all_runs[name].append(run)
        print_table(sorted(runs, key=lambda r: contenders.index(r["name"])), args.entries)
    return all_runs, reference, failed


def machine_info(ansible_version: str | None) -> None:
    import paramiko

    print("Machine")
    print(f"  cores: {os.cpu_count()}  ({platform.processor() or platform.machine()})")
    print(f"  kernel: {platform.release()}")
    print(f"  python: {platform.python_version()} ({sys.executable})")
    print(f"  paramiko: {paramiko.__version__}")
    print(f"  ansible-core: {ansible_version or 'not run'}")


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    home = os.environ.get("PATCHPILOT_HOME")
    default_lab = (
        Path(home) / "lab" if home else Path.home() / ".local" / "share" / "patchpilot" / "lab"
    )
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lab-dir", type=Path, default=default_lab)
    parser.add_argument("--entries", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--skip-ansible", action="store_true")
    parser.add_argument(
        "--extended",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run patchpilot with its default extended facts (default); "
        "--no-extended runs only the packages-only variant",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--contender", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.contender:
        return run_child(args)

    sys.path.insert(0, str(ROOT))
    from patchpilot.lab import Lab

    lab = Lab(args.lab_dir)
    hosts = lab.hosts()
    if not hosts:
        raise SystemExit(f"no lab hosts in {lab.dir}; run `patchpilot lab up` first")
    print(f"Lab {lab.dir}: {', '.join(f'{h.name}:{h.port}' for h in hosts)}")
    print("Preparation")
    prepare_sshd(lab, hosts)
    ansible_version = None
    if not args.skip_ansible:
        prepare_python_apt(lab, hosts)
        ansible_version = prepare_ansible()
        print(f"  ansible-core {ansible_version} in {ANSIBLE_VENV}")
    machine_info(ansible_version)

    contenders = ["bare", "bare-nodelay"]
    if args.extended:
        contenders.append("patchpilot")
    contenders.append("patchpilot-core")
    if not args.skip_ansible:
        contenders.append("ansible")

    work = Path(tempfile.mkdtemp(prefix="pp-bench-discovery-"))
    names = write_inventories(lab, hosts, args.entries, work)
    print(
        f"\n{args.entries} entries over {len(hosts)} hosts, concurrency {args.concurrency}, "
        f"{args.rounds} round(s); work dir {work}"
    )
    if not args.skip_ansible:
        print(
            "  ansible: defaults except strict host keys on the lab known_hosts, the lab key "
            "only (IdentitiesOnly, no agent), python=/usr/bin/python3, an empty ansible.cfg"
        )

    all_runs, reference, failed = run_rounds(args, contenders, work, names)

    if reference:
        total = sum(reference.values())
        print(f"\nPackages per pass (bare loop, dpkg-query lines): {total}")
        if "ansible" in all_runs:
            got = sum(e["packages"] or 0 for e in all_runs["ansible"][-1]["entries"].values())
            print(f"Packages per pass (ansible package_facts): {got}")
    met = summary(all_runs, args.entries)
    if "patchpilot" in all_runs:
        print(f"\npatchpilot within {TARGET_RATIO:g}x of the bare loop: {'YES' if met else 'NO'}")
    print(
        "\nwall/CPU: the whole child process (interpreter start, imports, work, exit); CPU is "
        "user+sys of the child and its reaped children (ControlPersist masters that outlive "
        "ansible are not counted). work: time inside the child around the discovery call only."
    )
    if not args.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
