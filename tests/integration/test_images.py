"""docker/proxy.Dockerfile and docker/control.Dockerfile, checked offline (no engine can build them here).

For each Dockerfile (docs/images.md):
- grammar: every instruction known, continuation lines closed, exec forms valid JSON string arrays, FROM
  naming debian:12 for the build stage and debian:12-slim for the runtime (ARG defaults resolved),
  COPY --from naming an earlier stage, the build context filtered by .dockerignore (no build dirs);
- build packages: the build stage's apt-get list provides (dpkg -S, with dependencies) every pkg-config
  module CMakeLists.txt asks for, what those Require, and every find_program;
- COPY sources: the build stage's own `cmake --install` command, run on the build under test (REMORA_BUILD,
  else the agent's build dir) into a temporary DESTDIR, yields every path the runtime stage copies; its
  `cmake --build --target` list holds every target with an install() rule;
- runtime packages: every library `ldd` reports for every ELF file the image holds (binaries and modules)
  belongs (`dpkg -S`) to a package of the runtime stage's `apt-get install` list, to a package those
  depend on (Depends/Pre-Depends, recursively, as installed here), or to debian:12-slim itself (the list
  below, with its source); every listed package is a Debian 12 package installed here; the proxy image
  has iptables for remora-init. (An ASan+UBSan build under test links differently from the Release image,
  so the ldd part is checked on normal builds only);
- entrypoints and users: as the contract (ENTRYPOINT, USER 2102:2102 proxy / 2103:2103 control, the
  binaries at /usr/local/bin), the image files the compose runner maps exist in the image, and the Helm
  chart (helm/remora, rendered with tests/tools/kube/bin/helm when both exist) runs the control image as
  2103 without overriding its entrypoint, and injects the proxy image with proxyUID 2102 at the version
  the Dockerfiles label; `remoractl inject` (the webhook's patch) runs the proxy image's remora-init as
  root with NET_ADMIN and NET_RAW only and its agent by the image's ENTRYPOINT as 2102.
Each check is also run on a mutated copy of the Dockerfile and must fail there.
"""

import importlib.machinery
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DOCKER = os.path.join(REPO, "docker")
AGENT = os.environ.get("REMORA_AGENT", os.path.join(REPO, "build", "agent", "remora-agent"))
BUILD = os.environ.get("REMORA_BUILD", os.path.dirname(os.path.dirname(AGENT)))
HELM = os.path.join(REPO, "tests", "tools", "kube", "bin", "helm")
CHART = os.path.join(REPO, "helm", "remora")

# What the contract fixes (Issue 11, "Images").
IMAGES = {
    "proxy": {"file": "proxy.Dockerfile", "user": "2102:2102", "entrypoint": ["/usr/local/bin/remora-agent"],
              "binaries": ["/usr/local/bin/remora-agent", "/usr/local/bin/remora-init", "/usr/local/bin/remoractl"]},
    "control": {"file": "control.Dockerfile", "user": "2103:2103", "entrypoint": ["/usr/local/bin/remora-control"],
                "binaries": ["/usr/local/bin/remora-control", "/usr/local/bin/remoractl"]},
}

# The binary packages of debian:12-slim (bookworm-slim, amd64), from docker-library/repo-info
# repos/debian/local/bookworm-slim.md (commit 321a824e8fd6c5a8a1291b74697c33ecb0fb81be): what a runtime
# stage built on it has without installing anything.
SLIM_BASE = set("""
adduser apt base-files base-passwd bash bsdutils coreutils dash debconf debian-archive-keyring debianutils diffutils
dpkg e2fsprogs findutils gcc-12-base gpgv grep gzip hostname init-system-helpers libacl1 libapt-pkg6.0 libattr1
libaudit-common libaudit1 libblkid1 libbz2-1.0 libc-bin libc6 libcap-ng0 libcap2 libcom-err2 libcrypt1 libdb5.3
libdebconfclient0 libext2fs2 libffi8 libgcc-s1 libgcrypt20 libgmp10 libgnutls30 libgpg-error0 libhogweed6
libidn2-0 liblz4-1 liblzma5 libmd0 libmount1 libnettle8 libp11-kit0 libpam-modules libpam-modules-bin
libpam-runtime libpam0g libpcre2-8-0 libseccomp2 libselinux1 libsemanage-common libsemanage2 libsepol2
libsmartcols1 libss2 libstdc++6 libsystemd0 libtasn1-6 libtinfo6 libudev1 libunistring2 libuuid1 libxxhash0
libzstd1 login logsave mawk mount ncurses-base ncurses-bin passwd perl-base sed sysvinit-utils tar tzdata
usr-is-merged util-linux util-linux-extra zlib1g
""".split())

INSTRUCTIONS = {"FROM", "ARG", "RUN", "COPY", "ADD", "LABEL", "USER", "EXPOSE", "ENTRYPOINT", "CMD", "WORKDIR", "ENV",
                "VOLUME", "STOPSIGNAL", "HEALTHCHECK", "SHELL", "ONBUILD"}


# ------------------------------------------------------------------------------------------- the parser

def parse(text):
    """Stages of a Dockerfile: [{"name", "base", "lines": [(INSTR, args)]}], ARGs before the first FROM
    resolved in FROM. Raises AssertionError on anything outside the instruction grammar."""
    logical, cur, lineno = [], None, 0
    for lineno, raw in enumerate(text.split("\n"), 1):
        line = raw.rstrip()
        if cur is None:
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            cur = (lineno, "")
        elif line.lstrip().startswith("#"):
            continue  # a comment line inside a continued instruction
        if line.endswith("\\"):
            cur = (cur[0], cur[1] + line[:-1] + " ")
            continue
        logical.append((cur[0], cur[1] + line))
        cur = None
    assert cur is None, f"line {lineno}: the file ends inside a continued instruction"
    global_args, stages = {}, []
    for n, line in logical:
        m = re.match(r"^\s*([A-Za-z]+)\s+(.*\S)\s*$", line)
        assert m, f"line {n}: not an instruction: {line!r}"
        instr, args = m.group(1).upper(), m.group(2)
        assert instr in INSTRUCTIONS, f"line {n}: unknown instruction {m.group(1)}"
        if instr == "ARG" and not stages:
            k, _, v = args.partition("=")
            global_args[k] = v
            continue
        if instr == "FROM":
            fm = re.match(r"^(\S+)(?:\s+AS\s+([a-z][a-z0-9_.-]*))?$", args, re.I)
            assert fm, f"line {n}: FROM IMAGE [AS NAME] expected: {args!r}"
            base = re.sub(r"\$\{?(\w+)\}?", lambda x: global_args.get(x.group(1), ""), fm.group(1))
            stages.append({"name": fm.group(2), "base": base, "lines": []})
            continue
        assert stages, f"line {n}: {instr} before the first FROM"
        if instr in ("ENTRYPOINT", "CMD") or (instr in ("COPY", "RUN") and args.startswith("[")):
            if args.startswith("["):
                try:
                    val = json.loads(args)
                except ValueError as e:
                    raise AssertionError(f"line {n}: {instr} exec form is not JSON: {e}")
                assert isinstance(val, list) and val and all(isinstance(x, str) for x in val), \
                    f"line {n}: {instr}: a JSON array of strings"
        if instr == "COPY":
            words = shlex.split(args)
            flags = [w for w in words if w.startswith("--")]
            for f in flags:
                if f.startswith("--from="):
                    src = f[len("--from="):]
                    assert src in [s["name"] for s in stages[:-1]], f"line {n}: COPY --from={src}: no earlier stage of that name"
                else:
                    assert re.match(r"--(chown|chmod|link)(=|$)", f), f"line {n}: COPY flag {f} not known"
            assert len(words) - len(flags) >= 2, f"line {n}: COPY SRC... DEST"
        if instr == "USER":
            assert re.fullmatch(r"[\w.-]+(:[\w.-]+)?", args), f"line {n}: USER {args!r}"
        stages[-1]["lines"].append((instr, args))
    assert len(stages) >= 2, "multi-stage: a build stage and a runtime stage"
    return stages


def last(stage, instr):
    vals = [a for i, a in stage["lines"] if i == instr]
    return vals[-1] if vals else None


def commands(args):
    """The simple commands of a RUN's shell text (split at &&, ||, ;, |), each as its words."""
    lex = shlex.shlex(args, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    out, cur = [], []
    for tok in lex:
        if tok in ("&&", "||", ";", "|", "&"):
            out.append(cur)
            cur = []
        else:
            cur.append(tok)
    return out + [cur]


def apt_packages(stage):
    """The packages of every `apt-get install` in the stage's RUN instructions."""
    pkgs = []
    for instr, args in stage["lines"]:
        if instr != "RUN":
            continue
        for words in commands(args):
            if "apt-get" in words and "install" in words:
                pkgs += [w for w in words[words.index("install") + 1:] if not w.startswith("-")]
    return pkgs


def image_files(stage, destdir):
    """{path in the image: path under destdir} for every COPY --from=build of the runtime stage; raises
    AssertionError when a source is missing from destdir (the build stage's install output)."""
    files = {}
    for instr, args in stage["lines"]:
        if instr != "COPY":
            continue
        words = [w for w in shlex.split(args) if not w.startswith("--")]
        assert "--from=build" in args, f"COPY {args}: the runtime stage copies from the build stage only"
        *srcs, dest = words
        for src in srcs:
            assert src.startswith("/out/"), f"COPY {src}: the build stage installs into DESTDIR=/out"
            host = os.path.join(destdir, src[len("/out/"):])
            assert os.path.exists(host), (f"COPY source {src} does not exist after the build stage's cmake --install (a build dir "
                                      "configured before an install() rule was added is stale: rebuild it)")
            if os.path.isdir(host):
                assert dest.endswith("/"), f"COPY {src} (a directory) to {dest}: a directory destination"
                for d, _, fs in os.walk(host):
                    for f in fs:
                        files[os.path.join(dest, os.path.relpath(os.path.join(d, f), host))] = os.path.join(d, f)
            else:
                files[os.path.join(dest, os.path.basename(src)) if dest.endswith("/") else dest] = host
    return files


# --------------------------------------------------------------------------------------------- the checks

def check_grammar(stages, kind):
    build, runtime = stages[0], stages[-1]
    assert build["name"] == "build" and build["base"] == "debian:12", f"build stage: {build['name']} FROM {build['base']}"
    assert runtime["base"] == "debian:12-slim", f"runtime stage FROM {runtime['base']}, not debian:12-slim"
    assert ("COPY", ". .") in build["lines"], "the build stage copies the source tree"
    for instr, args in runtime["lines"]:
        assert instr != "COPY" or "--from=build" in args, "the runtime stage takes only the build stage's output"
    runs = " ".join(a for i, a in runtime["lines"] if i == "RUN")
    assert "rm -rf /var/lib/apt/lists/*" in runs and "--no-install-recommends" in runs, "apt: no recommends, lists removed"


def install_command(stages):
    """The build stage's `cmake --install` command line and its --build --target list."""
    inst, targets = None, None
    for instr, args in stages[0]["lines"]:
        if instr != "RUN":
            continue
        for words in commands(args):
            if "cmake" in words and "--install" in words:
                inst = words
            if "cmake" in words and "--build" in words and "--target" in words:
                targets = words[words.index("--target") + 1:]
    assert inst is not None, "the build stage runs cmake --install"
    assert targets, "the build stage builds named targets (cmake --build --target ...)"
    return inst, targets


def run_install(stages, destdir):
    """The build stage's own install command, with its build dir (/build) replaced by the build under test."""
    inst, _ = install_command(stages)
    env = dict(os.environ)
    argv = []
    for w in inst:
        if re.fullmatch(r"[A-Z_]+=.*", w) and not argv:
            k, _, v = w.partition("=")
            assert k == "DESTDIR" and v == "/out", w
            env["DESTDIR"] = destdir
        else:
            argv.append(BUILD if w == "/build" else w)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stdout + r.stderr


def install_targets():
    """Every target with an install() rule in the project's CMakeLists.txt files."""
    names = set()
    for d, dirs, files in os.walk(REPO):
        dirs[:] = [x for x in dirs if not x.startswith(("build", ".")) and x != "node_modules"]
        if "CMakeLists.txt" in files:
            with open(os.path.join(d, "CMakeLists.txt")) as f:
                for m in re.finditer(r"install\(\s*TARGETS\s+([^)]*?)\s+(?:RUNTIME|LIBRARY|ARCHIVE|DESTINATION)", f.read()):
                    names.update(m.group(1).split())
    return names


def check_targets(stages):
    _, targets = install_command(stages)
    missing = install_targets() - set(targets)
    assert not missing, f"targets with install() rules that the build stage does not build: {sorted(missing)}"


_OWNER, _LDD = {}, {}


def owners(paths):
    """{path: the Debian package owning it (its real path)}, one dpkg -S for every path not seen before."""
    # usrmerge: dpkg knows some files by their /lib name, others by their /usr/lib name
    todo = sorted(({os.path.realpath(p) for p in paths} | set(paths)) - set(_OWNER))
    if todo:
        r = subprocess.run(["dpkg", "-S", *todo], capture_output=True, text=True, timeout=60)
        for line in r.stdout.splitlines():
            pkg, _, path = line.partition(": ")
            if path in todo and not pkg.startswith("diversion by"):
                _OWNER.setdefault(path, pkg.split(",")[0].split(":")[0].strip())
    out = {}
    for p in paths:
        owner = _OWNER.get(os.path.realpath(p)) or _OWNER.get(p)
        assert owner, f"{p}: no Debian package owns it here"
        out[p] = owner
    return out


def dpkg_owner(path):
    return owners([path])[path]


_INSTALLED = {}


def installed():
    """{package: its Depends and Pre-Depends (every alternative)} of every package installed here, read once."""
    if not _INSTALLED:
        r = subprocess.run(["dpkg-query", "-W", "-f", "${Package}\t${Status}\t${Depends}, ${Pre-Depends}\n"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        for line in r.stdout.splitlines():
            name, status, deps = line.split("\t")
            if "install ok installed" in status:
                _INSTALLED[name] = {re.split(r"[\s(:]", alt.strip())[0] for dep in deps.split(",")
                                    for alt in dep.split("|") if alt.strip()}
    return _INSTALLED


def depends(pkg):
    assert pkg in installed(), f"{pkg}: not a package installed here (the lists name Debian 12 packages)"
    return installed()[pkg]


def closure(pkgs):
    seen, todo = set(), list(pkgs)
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        todo.extend(installed().get(p, ()))
    return seen


def sanitized():
    """True when the build under test is an ASan/UBSan build: its link set (sanitizer runtimes, libatomic,
    no --as-needed pruning in Debug) is not the Release image's, so ldd coverage is not checked on it."""
    out = subprocess.run(["ldd", os.path.join(BUILD, "agent", "remora-agent")], capture_output=True, text=True,
                         timeout=30).stdout
    return "libasan" in out or "libubsan" in out


def check_packages(stages, files, kind):
    pkgs = apt_packages(stages[-1])
    for p in pkgs:
        depends(p)  # each is a package installed here
    if kind == "proxy":
        assert "iptables" in pkgs, "remora-init needs iptables-nft-restore / iptables-legacy-restore"
    if sanitized():
        return
    have = closure(pkgs) | SLIM_BASE
    need = {}
    for path, host in files.items():
        with open(host, "rb") as f:
            if f.read(4) != b"\x7fELF":
                continue
        if host not in _LDD:
            r = subprocess.run(["ldd", host], capture_output=True, text=True, timeout=30)
            assert r.returncode == 0, r.stderr
            _LDD[host] = r.stdout
        libs = [m.groups() for m in re.finditer(r"^\s*(\S+) => (/\S+)", _LDD[host], re.M)]
        by_path = owners([lib_path for _, lib_path in libs])
        for soname, lib_path in libs:
            need.setdefault(by_path[lib_path], set()).add(f"{soname} ({path})")
    missing = {p: sorted(w) for p, w in need.items() if p not in have}
    assert not missing, f"{kind}: libraries ldd needs from packages the runtime stage does not install: {missing}"


def cmake_needs():
    """pkg-config modules (pkg_check_modules) and programs (find_program) the project's CMakeLists.txt ask for."""
    mods, progs = set(), set()
    for d, dirs, files in os.walk(REPO):
        dirs[:] = [x for x in dirs if not x.startswith(("build", ".")) and x != "node_modules" and x != "tests"]
        if "CMakeLists.txt" in files:
            with open(os.path.join(d, "CMakeLists.txt")) as f:
                text = f.read()
            for m in re.finditer(r"pkg_check_modules\(\s*\w+\s+([^)]*)\)", text):
                mods.update(w for w in m.group(1).split() if w not in ("REQUIRED", "IMPORTED_TARGET", "GLOBAL", "QUIET"))
            progs.update(re.findall(r"find_program\(\s*\w+\s+(\S+)", text))
    return mods, progs


_BUILD_NEEDS = {}


def build_needs():
    """{pkg-config module or program: the Debian package that provides it here}, every module the
    configure step asks for and what those Require (computed once)."""
    if not _BUILD_NEEDS:
        mods, progs = cmake_needs()
        todo, seen, pcs = list(mods), set(), {}
        while todo:
            mod = todo.pop()
            if mod in seen:
                continue
            seen.add(mod)
            r = subprocess.run(["pkg-config", "--path", mod], capture_output=True, text=True, timeout=30)
            assert r.returncode == 0, f"pkg-config module {mod} is not installed here"
            pcs[mod] = r.stdout.strip()
            r = subprocess.run(["pkg-config", "--print-requires", "--print-requires-private", mod], capture_output=True,
                               text=True, timeout=30)
            todo.extend(line.split()[0] for line in r.stdout.splitlines() if line.strip())
        for prog in progs:
            pcs[prog] = shutil.which(prog)
            assert pcs[prog], f"{prog} is not installed here"
        by_path = owners(list(pcs.values()))
        _BUILD_NEEDS.update({k: by_path[v] for k, v in pcs.items()})
    return _BUILD_NEEDS


def check_build_packages(stages):
    """The build stage's packages provide every pkg-config module (and what it Requires) and program the
    configure step asks for (the owners found with dpkg -S on this Debian 12 machine)."""
    have = closure(apt_packages(stages[0]))
    missing = {k: owner for k, owner in build_needs().items() if owner not in have}
    assert not missing, f"the build stage does not install what configure needs: {missing}"


def check_entrypoint_user(stages, files, kind):
    want = IMAGES[kind]
    runtime = stages[-1]
    entry = json.loads(last(runtime, "ENTRYPOINT") or "null")
    assert entry == want["entrypoint"], f"ENTRYPOINT {entry}, the contract says {want['entrypoint']}"
    assert last(runtime, "USER") == want["user"], f"USER {last(runtime, 'USER')}, the contract says {want['user']}"
    for b in want["binaries"] + want["entrypoint"]:
        assert b in files, f"{b} is not in the image (COPY)"


# ------------------------------------------------------------------------------------------------ fixtures

def _read(kind):
    with open(os.path.join(DOCKER, IMAGES[kind]["file"])) as f:
        return f.read()


def _needs_build():
    for rel in ("agent/remora-agent", "agent/remora-agent-control.so", "agent/remora-agent-otlp.so", "init/remora-init",
                "control/remora-control", "control/remoractl"):
        if not os.path.exists(os.path.join(BUILD, rel)):
            pytest.skip(f"needs the built {os.path.join(BUILD, rel)} (REMORA_BUILD)")
    for tool in ("cmake", "ldd", "dpkg", "dpkg-query", "pkg-config"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")


@pytest.fixture(scope="module")
def destdir():
    _needs_build()
    d = tempfile.mkdtemp(prefix="rmimg-")
    try:
        run_install(parse(_read("proxy")), d)
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def all_checks(text, kind, destdir):
    stages = parse(text)
    check_grammar(stages, kind)
    check_targets(stages)
    check_build_packages(stages)
    files = image_files(stages[-1], destdir)
    check_packages(stages, files, kind)
    check_entrypoint_user(stages, files, kind)
    return stages, files


# ------------------------------------------------------------------------------------------------- tests

@pytest.mark.parametrize("kind", sorted(IMAGES))
def test_dockerfile_checks(kind, destdir):
    all_checks(_read(kind), kind, destdir)


def test_both_build_stages_are_the_same():
    a, b = parse(_read("proxy"))[0], parse(_read("control"))[0]
    assert a["lines"] == b["lines"] and a["base"] == b["base"]


def test_dockerignore_keeps_build_dirs_out():
    with open(os.path.join(REPO, ".dockerignore")) as f:
        pats = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    for p in ("build*", ".git", "**/node_modules"):
        assert p in pats, p


# each mutation breaks one check; the suite must notice, for that reason (the regex)
MUTATIONS = {
    "grammar: unknown instruction": ("proxy", "FROM ${RUNTIME_IMAGE}\n", "FORM ${RUNTIME_IMAGE}\n", r"unknown instruction FORM"),
    "grammar: exec form not JSON": ("control", 'ENTRYPOINT ["/usr/local/bin/remora-control"]',
                                    "ENTRYPOINT [/usr/local/bin/remora-control]", r"exec form is not JSON"),
    "grammar: lost continuation": ("proxy", "libyaml-0-2 \\\n      libgrpc29", "libyaml-0-2\n      libgrpc29",
                                   r"not an instruction"),
    "grammar: runtime not slim": ("proxy", "ARG RUNTIME_IMAGE=debian:12-slim", "ARG RUNTIME_IMAGE=debian:12",
                                  r"not debian:12-slim"),
    "grammar: COPY --from unknown stage": ("control", "COPY --from=build", "COPY --from=builder", r"no earlier stage"),
    "COPY source not installed": ("proxy", "/out/usr/local/bin/remoractl /usr/local/bin/",
                                  "/out/usr/local/bin/remoractl-x /usr/local/bin/", r"does not exist after the build stage"),
    "install target not built": ("control", " remora-init remora-control", " remora-control",
                                 r"does not build: \['remora-init'\]"),
    "build package missing": ("control", "libjansson-dev ", "", r"'jansson': 'libjansson-dev'"),
    "runtime package missing": ("proxy", "libgrpc29 libprotobuf-c1", "libprotobuf-c1", r"'libgrpc29'"),
    "runtime package misspelt": ("control", "libyaml-0-2", "libyaml0-2", r"libyaml0-2: not a package"),
    "iptables missing": ("proxy", "      iptables && \\", "      && \\", r"remora-init needs iptables"),
    "entrypoint path": ("proxy", 'ENTRYPOINT ["/usr/local/bin/remora-agent"]', 'ENTRYPOINT ["/usr/local/bin/remora-agentd"]',
                        r"ENTRYPOINT .*remora-agentd"),
    "user": ("control", "USER 2103:2103", "USER 0:0", r"USER 0:0"),
    "binary not copied": ("proxy", "/out/usr/local/bin/remora-init ", "", r"remora-init is not in the image"),
}


@pytest.mark.parametrize("what", sorted(MUTATIONS))
def test_mutated_dockerfile_fails(what, destdir):
    kind, old, new, expect = MUTATIONS[what]
    if what == "runtime package missing" and sanitized():
        pytest.skip("the build under test is sanitized: ldd coverage is checked on a normal build only")
    text = _read(kind)
    assert text.count(old) >= 1, f"mutation {what!r} no longer applies: update it"
    with pytest.raises(AssertionError, match=expect):
        all_checks(text.replace(old, new, 1), kind, destdir)


def test_compose_runner_maps_files_the_images_hold(destdir):
    """scripts/compose-mesh.sh's image -> binary mapping names files each image really holds."""
    loader = importlib.machinery.SourceFileLoader("compose_mesh", os.path.join(REPO, "scripts", "compose-mesh.sh"))
    spec = importlib.util.spec_from_loader("compose_mesh", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    for repo, (dockerfile, files) in mod.IMAGES.items():
        kind = repo.rsplit("/", 1)[1]
        assert dockerfile == f"docker/{IMAGES[kind]['file']}"
        _, image = all_checks(_read(kind), kind, destdir)
        assert set(files) <= set(image), set(files) - set(image)
        conf = mod.image_config(os.path.join(REPO, dockerfile))
        assert conf["entrypoint"] == IMAGES[kind]["entrypoint"] and conf["user"] == IMAGES[kind]["user"]


def test_chart_runs_the_images_as_built():
    yaml = pytest.importorskip("yaml")
    if not (os.path.isdir(CHART) and os.access(HELM, os.X_OK)):
        pytest.skip("helm/remora or tests/tools/kube/bin/helm absent: users and entrypoints checked against the contract only")
    r = subprocess.run([HELM, "template", "remora", CHART, "--namespace", "remora-system"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    docs = [d for d in yaml.safe_load_all(r.stdout) if d]
    proxy, control = parse(_read("proxy")), parse(_read("control"))
    version = next(a for i, a in proxy[-1]["lines"] if i == "ARG" and a.startswith("VERSION=")).split("=", 1)[1]
    dep = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "remora-control")
    pod = dep["spec"]["template"]["spec"]
    c = next(c for c in pod["containers"] if c["name"] == "remora-control")
    assert c["image"] == f"ghcr.io/remora-mesh/control:{version}", c["image"]
    uid = (c.get("securityContext") or {}).get("runAsUser", (pod.get("securityContext") or {}).get("runAsUser"))
    assert str(uid) == last(control[-1], "USER").split(":")[0]
    if "command" in c:
        assert c["command"][0] == json.loads(last(control[-1], "ENTRYPOINT"))[0], c["command"]
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "remora-injector")
    inj = yaml.safe_load(cm["data"]["config.yaml"])
    assert inj["proxyImage"] == f"ghcr.io/remora-mesh/proxy:{version}", inj["proxyImage"]
    assert str(inj["proxyUID"]) == last(proxy[-1], "USER").split(":")[0]


def test_injected_pod_runs_the_proxy_image_as_built(destdir):
    """`remoractl inject` (the webhook's patch, offline) runs the proxy image's files as its users."""
    yaml = pytest.importorskip("yaml")
    remoractl = os.path.join(BUILD, "control", "remoractl")
    pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: default}\nspec:\n  containers:\n  - {name: web, image: nginx}\n"
    r = subprocess.run([remoractl, "inject", "-f", "-"], input=pod, capture_output=True, text=True, timeout=30)
    if r.returncode == 2 and "inject" not in r.stderr.split("\n")[0]:
        pytest.skip(f"this remoractl has no inject: {r.stderr.strip()[:200]}")
    assert r.returncode == 0, r.stderr
    spec = yaml.safe_load(r.stdout)["spec"]
    stages = parse(_read("proxy"))
    files = image_files(stages[-1], destdir)
    version = next(a for i, a in stages[-1]["lines"] if i == "ARG" and a.startswith("VERSION=")).split("=", 1)[1]
    uid, gid = (int(x) for x in last(stages[-1], "USER").split(":"))
    init = next(c for c in spec["initContainers"] if c["name"] == "remora-init")
    proxy = next(c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] == "remora-proxy")
    for c in (init, proxy):
        assert c["image"] == f"ghcr.io/remora-mesh/proxy:{version}", c["image"]
    assert init["command"][0] in files, init["command"]
    sc = init["securityContext"]
    assert sc["runAsUser"] == 0 and sc["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN", "NET_RAW"]}, sc
    assert "command" not in proxy or proxy["command"][0] == json.loads(last(stages[-1], "ENTRYPOINT"))[0], proxy.get("command")
    assert proxy["securityContext"]["runAsUser"] == uid and proxy["securityContext"].get("runAsGroup", gid) == gid
