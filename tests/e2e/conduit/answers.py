"""Checks the answers a Conduit test got against the RealWorld spec's
openapi.yml: each exchange (method, the spec's path template, status,
content type, JSON body) must be an answer the document describes for that
operation, its body valid against the response's schema, its content type
the one the response names. A 401, 403 or 404 the document does not list
for an operation is allowed where error-handling.md requires it, and its
body must then be the spec's error body (GenericErrorModel). Every
operation of the document must have been answered with a success once.

    python answers.py OPENAPI_YML EXCHANGES_JSON

Prints what it checked; exits 1 with every mismatch.

    python answers.py --with-spec-errors OPENAPI_YML OUT_YML

writes the document with those statuses added to every operation that
lacks them, for a fuzzer to hold the answers to."""

import json
import sys

import jsonschema
import referencing
import yaml

# Statuses error-handling.md gives that openapi.yml does not list on
# every operation.
SPEC_ERRORS = {401, 403, 404}


def main(spec_path, exchanges_path):
    with open(spec_path) as f:
        spec = yaml.safe_load(f)
    with open(exchanges_path) as f:
        exchanges = json.load(f)
    root = referencing.Resource.from_contents(spec, default_specification=referencing.jsonschema.DRAFT202012)
    registry = referencing.Registry().with_resource("urn:conduit", root)

    def follow(pointer):
        """The node at `pointer` (a JSON pointer without its `#/`), and
        its pointer, following `$ref`s."""
        while True:
            node = registry.resolver(base_uri="urn:conduit").lookup("urn:conduit#/" + pointer).contents
            if not (isinstance(node, dict) and "$ref" in node):
                return node, pointer
            pointer = node["$ref"].removeprefix("#/")

    def validate(body, pointer, where):
        # A schema by its place in the document, so that its own `$ref`s
        # resolve there.
        validator = jsonschema.Draft202012Validator(
            {"$ref": "urn:conduit#/" + pointer},
            registry=registry,
            format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
        )
        return [f"{where}: {e.json_path}: {e.message}" for e in validator.iter_errors(body)]

    problems = []
    checked = 0
    for x in exchanges:
        where = f"{x['method'].upper()} {x['template']} -> {x['status']}"
        operation = spec["paths"].get(x["template"], {}).get(x["method"])
        if operation is None:
            # A route the spec has not (an unknown path, PATCH): only
            # the error shape is checked.
            if x["body"] is not None:
                problems += validate(x["body"], "components/schemas/GenericErrorModel", where)
            checked += 1
            continue
        response = operation["responses"].get(str(x["status"]))
        if response is None:
            if x["status"] not in SPEC_ERRORS:
                problems.append(f"{where}: openapi.yml lists no {x['status']} for this operation")
            elif x["body"] is None:
                problems.append(f"{where}: an error answer without the error body")
            else:
                problems += validate(x["body"], "components/schemas/GenericErrorModel", where)
            checked += 1
            continue
        escaped = x["template"].replace("~", "~0").replace("/", "~1")
        response, pointer = follow(f"paths/{escaped}/{x['method']}/responses/{x['status']}")
        content = response.get("content") or {}
        if not content:
            # EmptyOkResponse, Unauthorized: no content described.
            if x["status"] == 204 and x["body"] is not None:
                problems.append(f"{where}: a 204 with a body")
            checked += 1
            continue
        media = content.get("application/json")
        if media is None:
            problems.append(f"{where}: the response has no application/json content")
            continue
        if not (x["content_type"] or "").startswith("application/json"):
            problems.append(f"{where}: content type {x['content_type']!r}, not application/json")
        if x["body"] is None:
            problems.append(f"{where}: no body")
        else:
            problems += validate(x["body"], pointer + "/content/application~1json/schema", where)
        checked += 1
    # Every operation of the document was answered with a success once.
    succeeded = {(x["method"], x["template"]) for x in exchanges if 200 <= x["status"] < 300}
    for template, operations in spec["paths"].items():
        for method in operations:
            if (method, template) not in succeeded:
                problems.append(f"{method.upper()} {template}: never answered with a success")
    print(f"checked {checked} answers against {spec_path}")
    if problems:
        print("\n".join(problems))
        sys.exit(1)


def with_spec_errors(spec_path, out_path):
    with open(spec_path) as f:
        spec = yaml.safe_load(f)
    error = {"$ref": "#/components/responses/GenericError"}
    for operations in spec["paths"].values():
        for operation in operations.values():
            for status in SPEC_ERRORS:
                operation["responses"].setdefault(str(status), error)
    with open(out_path, "w") as f:
        yaml.safe_dump(spec, f, sort_keys=False)


if __name__ == "__main__":
    if sys.argv[1] == "--with-spec-errors":
        with_spec_errors(sys.argv[2], sys.argv[3])
    else:
        main(sys.argv[1], sys.argv[2])
