"""Template filters: safe Markdown for guidelines, prompts and model output; sampling settings in words."""

import markdown as markdown_lib
import nh3
from django import template
from django.utils.safestring import mark_safe

from config.job_queue import queue_place

register = template.Library()

ALLOWED_TAGS = {
    "p", "br", "hr", "em", "strong", "code", "pre", "blockquote", "ul", "ol", "li",
    "h1", "h2", "h3", "h4", "h5", "h6", "a", "table", "thead", "tbody", "tr", "th", "td", "del",
}


@register.filter
def markdown(text: str) -> str:
    """Render Markdown with raw HTML shown as text, never as markup: model output that talks about `<div>` must
    read as `<div>`. nh3 then keeps only harmless tags and attributes, as a second line of defence."""
    renderer = markdown_lib.Markdown(extensions=["fenced_code", "tables", "sane_lists"])
    renderer.preprocessors.deregister("html_block")
    renderer.inlinePatterns.deregister("html")
    html = renderer.convert(text or "")
    return mark_safe(nh3.clean(html, tags=ALLOWED_TAGS, attributes={"a": {"href", "title"}}, link_rel="noopener nofollow"))


@register.inclusion_tag("_job_queue.html")
def job_queue(job):
    """A queued job's place in its queue and what it waits for (nothing once it runs)."""
    return {"place": queue_place(job)}


SAMPLING_WORDS = {
    "temperature": "temperature {}",
    "top_p": "top_p {}",
    "top_k": "top_k {}",
    "max_new_tokens": "up to {} new tokens",
    "seed": "seed {}",
    "stop": "stops at {}",
}


@register.filter
def sampling(settings: dict) -> str:
    """Sampling settings as a reader writes them ("temperature 0.7 · top_p 0.95 · up to 256 new tokens"), known
    keys first in a fixed order, then any others as `key value`."""
    settings = {key: value for key, value in (settings or {}).items() if value not in (None, "", [])}
    known = [SAMPLING_WORDS[key].format(_setting_text(settings[key])) for key in SAMPLING_WORDS if key in settings]
    others = [f"{key} {_setting_text(value)}" for key, value in settings.items() if key not in SAMPLING_WORDS]
    return " · ".join(known + others)


def _setting_text(value) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(repr(item) if isinstance(item, str) else str(item) for item in value) or "nothing"
    return str(value)


@register.filter
def estimate(value, digits: int = 3) -> str:
    """An estimate as "0.625 [0.41, 0.83] (8)": the point, its 95% interval and the count behind it, never a bare
    point; "—" when there is nothing to estimate. Takes training.stats.Estimate or its dict."""
    if value is None:
        return "—"
    data = value if isinstance(value, dict) else value.as_dict()
    if data.get("value") is None:
        return "— (0)"
    number = f"{{:.{int(digits)}f}}"
    interval = f" [{number.format(data['low'])}, {number.format(data['high'])}]" if data.get("low") is not None else ""
    return f"{number.format(data['value'])}{interval} ({data['count']})"


@register.filter
def last_user_text(messages) -> str:
    """The last user turn of a conversation (what the reply answers), as plain text."""
    turns = [message.get("content", "") for message in messages or [] if isinstance(message, dict) and message.get("role") == "user"]
    return turns[-1] if turns else ""
