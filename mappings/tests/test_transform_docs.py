from pathlib import Path

from django.conf import settings

from mappings.docs import transforms_markdown
from mappings.transforms import TRANSFORMS


def test_docs_page_lists_every_transform_and_is_current():
    # given the committed reference page
    page = (Path(settings.BASE_DIR) / "docs" / "transforms.md").read_text()
    # then it is exactly what the registry generates (run `manage.py transforms_doc` after changing a transform)
    assert page == transforms_markdown()
    for name in TRANSFORMS:
        assert f"### `{name}`" in page
