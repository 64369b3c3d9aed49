//! The Python project `sluice new --lang python` writes (componentize-py).

use super::{MANIFEST, WORLD, with_wit};

/// The Python project's files, by path.
pub(super) fn files(name: &str) -> Vec<(String, String)> {
    let files = vec![
        ("app.py".to_string(), PYTHON_APP.to_string()),
        ("greetings.py".to_string(), PYTHON_LOGIC.to_string()),
        ("test_greetings.py".to_string(), PYTHON_TEST.to_string()),
        ("requirements.txt".to_string(), PYTHON_REQUIREMENTS.to_string()),
        ("wit/world.wit".to_string(), WORLD.replace("NAME", name)),
        ("manifest.toml".to_string(), MANIFEST.replace("NAME", name)),
        ("README.md".to_string(), PYTHON_README.replace("NAME", name)),
        (".gitignore".to_string(), "/.venv\n__pycache__/\n*.wasm\n".to_string()),
    ];
    with_wit(files)
}

/// The componentize-py the host's Python port is built with.
const PYTHON_REQUIREMENTS: &str = concat!(
    "# The Python guest toolchain (it carries CPython and the WASI adapter).\n",
    include_str!("../../../guests/toolchains/python/requirements.txt")
);

const PYTHON_APP: &str = r#""""The service's exports: componentize-py builds this module into the
component. Reads go through `from`; `to` only queues commands, applied when
the host saves the scope."""

from componentize_py_types import Err

from wit_world import exports
from wit_world.imports import from_, to, types

from greetings import count, key

# The channel every host has: keys in a table of its database.
CHANNEL = "kv"


class Api(exports.Api):
    def greet(self, who: str) -> int:
        """Counts a greeting of `who`: reads how many there were, queues one
        more and returns the new count."""
        name = key(who)
        if name is None:
            raise Err(types.Error_Invalid("who is empty"))
        before = from_.get(CHANNEL, name)
        to.increment(CHANNEL, name, 1)
        return count(before) + 1
"#;

const PYTHON_LOGIC: &str = r#""""What the service decides without the host: testable with plain
`python3 -m unittest`."""


def key(who: str) -> str | None:
    """The key counting `who`'s greetings; None for an empty name."""
    who = who.strip()
    return f"greetings/{who}" if who else None


def count(value: bytes | None) -> int:
    """A counter's value: decimal text, as `to.increment` keeps it."""
    return int(value.decode()) if value else 0
"#;

const PYTHON_TEST: &str = r#"import unittest

from greetings import count, key


class Greetings(unittest.TestCase):
    def test_keys_name_who_and_refuse_nobody(self):
        self.assertEqual(key(" ann "), "greetings/ann")
        self.assertIsNone(key("  "))
        self.assertEqual(count(b"41"), 41)
        self.assertEqual(count(None), 0)


if __name__ == "__main__":
    unittest.main()
"#;

const PYTHON_README: &str = r#"# NAME

A Sluice service in Python. Build it (Python 3.10 or later; installs
componentize-py into `.venv` the first time), then drop it into a services
directory:

```sh
python3 -m venv .venv && .venv/bin/pip install -q -r requirements.txt && .venv/bin/componentize-py -d wit -w local:NAME/NAME componentize app -o NAME.wasm && cp NAME.wasm SERVICES/NAME.wasm && cp manifest.toml SERVICES/NAME.toml
```

`sluice --services SERVICES call NAME.greet ann` runs it once;
`python3 -m unittest` runs its unit tests.

`wit/world.wit` is the service's world; `wit/deps/sluice-service/` is the
`sluice:service` package of the host that wrote this project.
"#;
