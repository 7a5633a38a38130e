"""A summary's shape is written once (lectr/analysis/summary.py) and used everywhere."""

import re
from pathlib import Path

import lectr
from lectr.analysis import summary as shape
from lectr.api import openapi

ROOT = Path(lectr.__file__).resolve().parent


def test_no_period_name_is_written_outside_the_shape():
    names = re.compile("|".join(re.escape(p.name) for p in shape.PERIODS))
    found = [f"{path.relative_to(ROOT)}:{n}" for path in [*ROOT.rglob("*.py"), *ROOT.rglob("*.html")]
             if path.name != "summary.py" or path.parent.name != "analysis"
             for n, line in enumerate(path.read_text().splitlines(), 1) if names.search(line)]
    assert found == []


def test_the_openapi_schemas_are_the_shape():
    schema = openapi.SUMMARY
    assert schema["required"] == list(shape.SUMMARY_REQUIRED)
    assert schema["properties"]["period"]["enum"] == list(shape.PERIOD_NAMES)
    for part, fields in (("totals", shape.TOTALS), ("previous", shape.TOTALS)):
        assert list(schema["properties"][part]["properties"]) == list(fields.names)
    for part, fields in (("models", shape.MODEL_ROW), ("providers", shape.PROVIDER_ROW),
                         ("features", shape.FEATURE_ROW)):
        items = schema["properties"][part]["items"]
        assert list(items["properties"]) == list(fields.names) and items["required"] == list(fields.required)
    point = schema["properties"]["series"]["properties"]["points"]["items"]
    assert list(point["properties"]) == list(shape.SERIES_POINT.names)
