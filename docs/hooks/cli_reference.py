"""MkDocs hook: writes the command-line reference page from the apps' own absl flags.

At each build, every command ``emzoo --help`` lists (``emzoo.apps.main.COMMANDS``) is imported in
its own Python process (absl flags are global, and each command defines its own), and its docstring and
flags (the command's and the shared ones ``emzoo.apps.common`` defines for it) are turned into one
section of ``reference/cli.md``: what the command does, its examples, and a table of its flags
with their defaults. Aliases kept for old spellings (``--batch_size`` for ``--batch-size``) are
left out. The page is generated in memory; nothing is written into ``docs/``, and a command that
cannot be imported fails the build.

Example (mkdocs.yml)::

    hooks:
      - docs/hooks/cli_reference.py
"""

import concurrent.futures
import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap

from mkdocs.structure.files import File

PAGE = "reference/cli.md"
_EXAMPLE = re.compile(r"^Examples?:\n( +)```(\w+)\n(.*?)\n\1```", re.MULTILINE | re.DOTALL)

# Runs in a child process: prints {"doc": ..., "flags": [...]} for one command module.
_DESCRIBE = r"""
import importlib, json, sys
from absl import flags
module = importlib.import_module(sys.argv[1])
by_module = flags.FLAGS.flags_by_module_dict()
rows, seen = [], set()
for owner in (module.__name__, "emzoo.apps.common"):
    for flag in by_module.get(owner, []):
        if flag.name in seen or (flag.help or "").startswith("Alias for"):
            continue
        seen.add(flag.name)
        enum = getattr(flag.parser, "enum_values", None)
        rows.append({"name": flag.name, "short": flag.short_name, "help": flag.help or "",
                     "default": flag.default, "boolean": bool(flag.boolean),
                     "type": flag.flag_type(), "enum": list(enum) if enum else None})
print(json.dumps({"doc": module.__doc__ or "", "flags": rows}, default=str))
"""


# Prints the commands: [[command, summary, module], ...] in the order `emzoo --help` lists them.
_COMMANDS = r"""
import json
from emzoo.apps import main
print(json.dumps([[c, s, "emzoo.apps." + main._MODULES.get(c, c)] for c, s in main.COMMANDS.items()]))
"""


def _run(script, *args):
    """The last stdout line of ``python -c script args``, run with the installed emzoo."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    # Run outside the checkout: `python -c` puts the working folder first on sys.path, and the
    # source tree's emzoo/ has no apps/ inside it (setup.py installs apps/ as emzoo.apps).
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                          env=env, timeout=300, cwd=tempfile.gettempdir())
    if done.returncode != 0:
        raise RuntimeError(f"The CLI reference could not be generated ({' '.join(args)}): "
                           f"{done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _describe(module):
    return _run(_DESCRIBE, module)


def _cell(text):
    return " ".join(str(text).split()).replace("|", "\\|")


def _default(flag):
    value = flag["default"]
    if flag["boolean"]:
        return "on" if value else "off"
    if value is None or value == "" or value == []:
        return ""
    if isinstance(value, list):
        value = ",".join(str(v) for v in value)
    return f"`{value}`"


def _value(flag):
    if flag["boolean"]:
        return ""
    if flag["enum"]:
        return ", ".join(f"`{v}`" for v in flag["enum"])
    return {"int": "integer", "float": "number", "string": "text", "list": "comma-separated",
            "multi_string": "text, repeatable"}.get(flag["type"], flag["type"])


def _flag_name(flag):
    name = f"--[no]{flag['name']}" if flag["boolean"] else f"--{flag['name']}"
    short = f"-{flag['short']}, " if flag["short"] else ""
    return f"`{short}{name}`"


def _section(command, summary, info, rewrite):
    lines = [f"## emzoo {command}", "", f"*{summary}*", ""]
    doc = rewrite(info["doc"].strip()) if info["doc"].strip() else ""
    # The docstring's example block, shown as shell lines at the page's top level.
    doc = _EXAMPLE.sub(lambda m: "**Example**\n\n```bash\n" + textwrap.dedent(m.group(3)) + "\n```",
                       doc)
    lines += [doc, ""] if doc else []
    if info["flags"]:
        lines += ["| flag | value | default | what it does |", "|---|---|---|---|"]
        for flag in sorted(info["flags"], key=lambda f: f["name"].lstrip("-").replace("_", "-")):
            text = re.sub(r"^<[^>]*>:\s*", "", flag["help"])  # absl's "<a|b|c>: " before an enum's help
            lines.append(f"| {_flag_name(flag)} | {_value(flag)} | {_default(flag)} | {_cell(text)} |")
        lines.append("")
    return "\n".join(lines)


def _page():
    sys.path.insert(0, os.path.dirname(__file__))
    from griffe_rst import rewrite  # the same docstring clean-up as the API reference

    commands = _run(_COMMANDS)
    summaries = {command: summary for command, summary, _ in commands}
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        infos = dict(zip(summaries, pool.map(_describe, [module for _, _, module in commands])))
    parts = ["# Command line", "",
             "Generated from the commands' own flags when this site is built: it is what "
             "`emzoo COMMAND --help` prints, laid out as tables. Every command also takes "
             "`--verbose` (TensorFlow's own log lines, hidden by default); a bad input is reported "
             "as one line and the command exits non-zero.", "",
             "| command | what it does |", "|---|---|"]
    parts += [f"| [`emzoo {command}`](#emzoo-{command}) | {summary} |"
              for command, summary in summaries.items()]
    parts.append("")
    parts += [_section(command, summary, infos[command], rewrite)
              for command, summary in summaries.items()]
    return "\n".join(parts)


def on_files(files, config):
    files.append(File.generated(config, PAGE, content=_page()))
    return files
