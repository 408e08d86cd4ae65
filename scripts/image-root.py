#!/usr/bin/env python3
"""Lays out DEST as the root of the plugin's image: the files the plugin runs,
and nothing else. The Dockerfile's build stage runs it as root, with the
Python the venv was made from; stdlib only.

    python3 image-root.py VENV DEST

What goes in, each file at its own path (the symlinks met on the way, such as
/bin -> usr/bin or python3 -> python3.11, are made too):
- the programs: VENV's Python, ip, bridge, and /bin/sh (dash: the managed
  plugin's entrypoint is a shell line);
- the shared libraries that they and the extension modules load (from ldd);
- the venv, less tests, C sources, pip and setuptools;
- the standard library modules that the venv's code can import: the import
  statements of every module in the venv are read (those inside functions
  too), then those of each standard module so found, and so on; plus the
  modules Python loads at start and every codec (codecs are looked up by name
  at run time). EXCLUDED modules are left out, with what only they import;
- /etc/passwd and /etc/group (who root is), and /tmp.
Then the venv's ELF files are stripped (Debian strips its own) and every module is compiled to an
unchecked-hash .pyc: the image never changes, and a hash-based .pyc holds no
time stamp.

It prints what each part costs: a Debian package, or a distribution in the venv.
"""

import ast
import compileall
import importlib.machinery
import os
import py_compile
import re
import shutil
import subprocess
import sys
import sysconfig

# Standard modules that code in the venv may import but that the plugin never
# runs; each is left out with whatever only it imports.
EXCLUDED = {
    # TLS: the plugin reaches Docker over its unix socket; without ssl, gevent
    # leaves it unpatched and requests and urllib3 do without (saves libssl
    # and libcrypto). hashlib falls back to Python's own hashes.
    "ssl", "_ssl", "_hashlib",
    # process pools (concurrent.futures.process): the plugin uses threads
    "multiprocessing",
    # East Asian multibyte codecs (C, 1 MB): Docker's API speaks UTF-8
    "_multibytecodec",
    # the interactive prompt, tests, debuggers, documentation, installers, GUI
    "readline", "test", "unittest", "doctest", "pdb", "pydoc", "pydoc_data", "idlelib",
    "tkinter", "turtle", "lib2to3", "ensurepip", "venv", "distutils",
}
# Left out of the venv: what only installs or tests packages.
VENV_SKIPPED_DISTRIBUTIONS = {"pip", "setuptools", "wheel", "_distutils_hack"}
VENV_SKIPPED_DIRS = {"tests", "testing", "__pycache__"}
SOURCE_SUFFIXES = (".c", ".h", ".hpp", ".cpp", ".pyx", ".pxd", ".pyi")
EMPTY_DIRS = {"/tmp": 0o1777}
IDENTITY_FILES = ("/etc/passwd", "/etc/group")
PROGRAM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


class Root:
    """DEST, and where each file in it came from."""

    def __init__(self, dest):
        self.dest = dest
        self.sources = {}  # path in the image -> the paths it was asked for by

    def copy(self, path, asked_as=None):
        """Copies PATH as the kernel finds it: each symlink on the way is made
        in DEST as it is, then followed."""
        asked_as = asked_as or path
        parts = os.path.normpath(path).strip("/").split("/")
        for index in range(len(parts)):
            current = "/" + "/".join(parts[:index + 1])
            if os.path.islink(current):
                target = os.readlink(current)
                self._symlink(current, target)
                rest = parts[index + 1:]
                resolved = os.path.normpath(os.path.join(os.path.dirname(current), target))
                self.copy(os.path.join(resolved, *rest), asked_as)
                return
        self._file(path)
        self.sources.setdefault(path, set()).update({path, asked_as})

    def copy_tree(self, top, keep):
        """Copies the files and symlinks under TOP for which keep(path) holds."""
        for folder, dirs, files in os.walk(top):
            dirs[:] = sorted(d for d in dirs if keep(os.path.join(folder, d)))
            for name in sorted(files + [d for d in dirs
                                        if os.path.islink(os.path.join(folder, d))]):
                path = os.path.join(folder, name)
                if not keep(path):
                    continue
                if os.path.islink(path):
                    self._symlink(path, os.readlink(path))
                else:
                    self._file(path)

    def inside(self, path):
        return os.path.join(self.dest, path.lstrip("/"))

    def _makedirs(self, folder):
        os.makedirs(self.inside(folder), mode=0o755, exist_ok=True)

    def _symlink(self, path, target):
        self._makedirs(os.path.dirname(path))
        if not os.path.lexists(self.inside(path)):
            os.symlink(target, self.inside(path))

    def _file(self, path):
        self._makedirs(os.path.dirname(path))
        if not os.path.lexists(self.inside(path)):
            shutil.copy2(path, self.inside(path))

    def files(self):
        """Every regular file in DEST, as paths in the image."""
        for folder, dirs, files in os.walk(self.dest):
            for name in files:
                full = os.path.join(folder, name)
                if os.path.isfile(full) and not os.path.islink(full):
                    yield "/" + os.path.relpath(full, self.dest)


def is_elf(path):
    with open(path, "rb") as f:
        return f.read(4) == b"\x7fELF"


def shared_libraries(path):
    """The libraries PATH loads (its dynamic loader too), as ldd resolves them."""
    done = subprocess.run(["ldd", path], capture_output=True, text=True)
    if done.returncode != 0:
        return []  # "not a dynamic executable": a static program
    libraries = []
    for line in done.stdout.splitlines():
        found = re.match(r"\s*(?:\S+ => )?(/\S+) \(0x", line)
        if found:
            libraries.append(found.group(1))
        elif "not found" in line:
            sys.exit(f"image-root.py: {path}: {line.strip()}")
    return libraries


# --- Python modules ---------------------------------------------------------------

def imported_names(path, module):
    """Every module name an import in PATH (module MODULE) may refer to; for
    `from A import b`, both A and A.b (b may be a submodule)."""
    with open(path, "rb") as f:
        tree = ast.parse(f.read(), path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
        elif (isinstance(node, ast.Call) and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and getattr(node.func, "id", getattr(node.func, "attr", None))
              in ("__import__", "import_module")):
            names.add(node.args[0].value)
    return {name for name in names if name}


class Stdlib:
    """Finds the files of standard modules without importing them."""

    def __init__(self):
        self.top = sysconfig.get_paths()["stdlib"]
        self.dirs = [self.top, os.path.join(self.top, "lib-dynload")]

    def find(self, name):
        """The file of standard module NAME, or None (a built-in, or not one)."""
        if name in sys.builtin_module_names:
            return None
        path = self.dirs
        parts = name.split(".")
        for index in range(len(parts)):
            spec = importlib.machinery.PathFinder.find_spec(".".join(parts[:index + 1]), path)
            if spec is None or spec.origin in (None, "frozen"):
                return None
            path = spec.submodule_search_locations or []
        return spec.origin

    def module_of(self, path):
        relative = os.path.relpath(path, self.top)
        if relative.startswith("lib-dynload" + os.sep):
            return os.path.basename(relative).split(".")[0]
        module = relative[:-len(".py")].replace(os.sep, ".")
        return module[:-len(".__init__")] if module.endswith(".__init__") else module


def standard_modules(stdlib, seeds, scanned_files):
    """The files of the standard modules in SEEDS and of all they can import,
    starting from the imports of SCANNED_FILES ({path: module name})."""
    queue = list(scanned_files.items()) + [(None, name) for name in seeds]
    found = {}
    while queue:
        path, module = queue.pop()
        names = {module} if path is None else imported_names(path, module)
        for name in sorted(names):
            if name.split(".")[0] in EXCLUDED:
                continue
            parts = name.split(".")
            for end in range(1, len(parts) + 1):  # a module's packages come with it
                prefix = ".".join(parts[:end])
                if prefix in found:
                    continue
                origin = stdlib.find(prefix)
                if origin is None:
                    break
                found[prefix] = origin
                if origin.endswith(".py"):
                    queue.append((origin, prefix))
    return sorted(set(found.values()))


def startup_modules(python):
    """What PYTHON imports before running anything (site, codecs...)."""
    done = subprocess.run([python, "-c", "import sys; print(*sys.modules)"],
                          capture_output=True, text=True, check=True)
    return done.stdout.split()


def codecs(stdlib):
    """The codecs written in Python (encodings.*), less those built on EXCLUDED modules."""
    folder = os.path.join(stdlib.top, "encodings")
    modules = ["encodings." + name[:-3] for name in os.listdir(folder) if name.endswith(".py")]
    return [module for module in modules if not any(
        name.split(".")[0] in EXCLUDED
        for name in imported_names(stdlib.find(module), module))]


# --- the venv ------------------------------------------------------------------------

def site_packages(venv):
    (path,) = [os.path.join(folder, "site-packages")
               for folder in [os.path.join(venv, "lib", name)
                              for name in os.listdir(os.path.join(venv, "lib"))]]
    return path


def distributions(site):
    """{file in SITE: distribution name}, from each dist-info's RECORD."""
    owners = {}
    for name in os.listdir(site):
        if not name.endswith(".dist-info"):
            continue
        distribution = name.split("-")[0]
        with open(os.path.join(site, name, "RECORD")) as f:
            for line in f:
                relative = line.rsplit(",", 2)[0]
                owners[os.path.normpath(os.path.join(site, relative))] = distribution
        owners[os.path.join(site, name)] = distribution
    return owners


def venv_keep(site, owners):
    def keep(path):
        name = os.path.basename(path)
        if name in VENV_SKIPPED_DIRS and os.path.isdir(path):
            return False
        if name.endswith(SOURCE_SUFFIXES):
            return False
        owner = owners.get(path)
        if owner is None and os.path.dirname(path) == site and os.path.isdir(path):
            # a package directory: skipped with its distribution
            owner = next((o for p, o in owners.items() if p.startswith(path + os.sep)), None)
        return owner not in VENV_SKIPPED_DISTRIBUTIONS
    return keep


def venv_modules(site, keep):
    """{path: module name} of every module kept in the venv."""
    modules = {}
    for folder, dirs, files in os.walk(site):
        dirs[:] = [d for d in dirs if keep(os.path.join(folder, d))]
        for name in files:
            path = os.path.join(folder, name)
            if name.endswith(".py") and keep(path):
                module = os.path.relpath(path, site)[:-3].replace(os.sep, ".")
                modules[path] = module.removesuffix(".__init__")
    return modules


# --- what it costs ----------------------------------------------------------------------

def debian_packages(paths):
    """{path: Debian package} for PATHS (each a set of names a file was asked
    by; with merged /usr, dpkg knows a file by one of /bin, /usr/bin...)."""
    def aliases(path):
        for short, merged in (("/bin/", "/usr/bin/"), ("/sbin/", "/usr/sbin/"),
                              ("/lib/", "/usr/lib/"), ("/lib64/", "/usr/lib64/")):
            if path.startswith(merged):
                yield short + path[len(merged):]
            elif path.startswith(short):
                yield merged + path[len(short):]
        yield path

    asked = {alias: real for real, names in paths.items() for name in names
             for alias in aliases(name)}
    done = subprocess.run(["dpkg-query", "-S", *sorted(asked)], capture_output=True, text=True)
    packages = {}
    for line in done.stdout.splitlines():
        package, _, path = line.partition(": ")
        if path in asked and "," not in package:
            packages[asked[path]] = package.split(":")[0]
    return packages


def report(root, parts):
    """Prints the size of each part, largest first."""
    sizes, bytecode = {}, 0
    for path in root.files():
        size = os.lstat(root.inside(path)).st_size
        source = path
        if path.endswith(".pyc"):
            bytecode += size
            folder, name = os.path.split(path)
            source = os.path.join(os.path.dirname(folder), name.split(".")[0] + ".py")
        part = parts.get(source) or parts.get(os.path.dirname(source), "other")
        sizes[part] = sizes.get(part, 0) + size
    print("image contents (KiB; .py with its .pyc):")
    for part, size in sorted(sizes.items(), key=lambda item: -item[1]):
        print(f"  {size / 1024:9.0f}  {part}")
    total = sum(sizes.values())
    print(f"  {total / 1024:9.0f}  total, of which {bytecode / 1024:.0f} .pyc")


# -------------------------------------------------------------------------------------------

def main(argv):
    if len(argv) != 2 or argv[0].startswith("-"):
        sys.exit(__doc__.split("\n\n")[1])
    venv, dest = (os.path.abspath(arg) for arg in argv)
    root = Root(dest)
    stdlib = Stdlib()
    python = os.path.join(venv, "bin", "python")

    programs = [python, shutil.which("ip", path=PROGRAM_PATH),
                shutil.which("bridge", path=PROGRAM_PATH), "/bin/sh"]
    for program in programs + list(IDENTITY_FILES):
        root.copy(program)

    site = site_packages(venv)
    owners = distributions(site)
    keep = venv_keep(site, owners)
    root.copy(os.path.join(venv, "pyvenv.cfg"))
    root.copy_tree(venv, keep)

    seeds = startup_modules(python) + codecs(stdlib)
    for path in standard_modules(stdlib, seeds, venv_modules(site, keep)):
        root.copy(path)

    elves = [path for path in root.files() if is_elf(root.inside(path))]
    for path in elves:
        for library in shared_libraries(path):
            root.copy(library)
    for path in elves:
        if path.startswith(venv + "/"):  # Debian strips its own
            subprocess.run(["strip", "--strip-unneeded", root.inside(path)], check=True)

    for folder, mode in EMPTY_DIRS.items():
        root._makedirs(folder)
        os.chmod(root.inside(folder), mode)
    for top in (stdlib.top, site):
        compileall.compile_dir(root.inside(top), quiet=1, stripdir=dest, prependdir="/",
                                   invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)

    parts = {path: "venv: " + owner for path, owner in owners.items()}
    parts.update((path, "Debian: " + package)
                 for path, package in debian_packages(root.sources).items())
    report(root, parts)


if __name__ == "__main__":
    main(sys.argv[1:])
