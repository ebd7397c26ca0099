"""A validator of ``srv6pm lab run --json`` lines: srv6pm/schemas/srv6pm.lab-output.schema.json with the
topic schemas it refers to."""

import json
from importlib import resources

import jsonschema
from referencing import Registry, Resource


def lab_output_validator() -> jsonschema.protocols.Validator:
    folder = resources.files("srv6pm").joinpath("schemas")
    docs = [json.loads(f.read_text()) for f in folder.iterdir() if f.name.endswith(".schema.json")]
    registry = Registry().with_resources((doc["$id"], Resource.from_contents(doc)) for doc in docs)
    (doc,) = [d for d in docs if d["$id"].endswith("/srv6pm.lab-output.schema.json")]
    cls = jsonschema.validators.validator_for(doc)
    cls.check_schema(doc)
    return cls(doc, registry=registry)
