"""What page.py and safety.py both need to write HTML: escaping text from run files, JSON that is safe
inside <script>, and how many rows a browsable table embeds."""

from __future__ import annotations

import html
import json
from typing import Any

SAMPLE_ROWS = 5000   # rows of a samples table embedded in the page (the file itself keeps them all)


def escape(value: Any) -> str:
    """Any value as HTML text, quotes included, so that it is safe in an attribute too.

    >>> escape("<b class='x'>&</b>")
    '&lt;b class=&#x27;x&#x27;&gt;&amp;&lt;/b&gt;'
    """
    return html.escape(str(value), quote=True)


def script_json(value: Any) -> str:
    """JSON that is safe inside <script>: no '</' can end the element early.

    >>> script_json({"a": "</script><!--"})
    '{"a": "<\\\\/script><\\\\!--"}'
    """
    return json.dumps(value, ensure_ascii=False).replace("</", "<\\/").replace("<!--", "<\\!--")
