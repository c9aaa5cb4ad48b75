"""The settings screen: every setting of the file, grouped, validated as you type."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.events import DescendantFocus
from textual.screen import Screen
from textual.suggester import Suggester
from textual.widget import Widget
from textual.widgets import Footer, Header, Input, Label, Select, Static, Switch

from mile_engine.config.schema import FIELDS, GROUPS, LEGACY_MODELS, MODELS, SettingsError
from mile_engine.config.validation import allowed_text
from mile_tui.screens.dialogs import ConfirmScreen
from mile_tui.screens.settings_form import SettingsForm, format_value, weights_names

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def choices_of(name: str, current: Any) -> tuple[str, ...]:
    """The values a select offers; the device select keeps a `cuda:N` the file names."""
    if name == "device":
        return DEVICE_CHOICES if current in DEVICE_CHOICES else (*DEVICE_CHOICES, current)
    if name == "model" and not MODELS.loaded:
        # torchvision's list costs seconds of imports: the screen offers it once a
        # worker has read it (`SettingsScreen.fill_model_names`).
        return tuple(dict.fromkeys([*LEGACY_MODELS, current]))
    return tuple(FIELDS[name].metadata["choices"] or ())


def is_select(name: str) -> bool:
    """Whether a setting is edited with a select rather than typed."""
    return name == "device" or bool(FIELDS[name].metadata["choices"])


class WeightsSuggester(Suggester):
    """Completes the `weights` input with the torchvision weights names of the model
    now chosen on the form (a path is typed as it is)."""

    def __init__(self, form: SettingsForm) -> None:
        # No cache: the same text completes differently once another model is chosen.
        super().__init__(use_cache=False, case_sensitive=True)
        self.form = form

    async def get_suggestion(self, value: str) -> str | None:
        """The first weights name of the current model that starts with `value`."""
        if not value:
            return None
        names = weights_names(self.form.values["model"])
        return next((n for n in names if n.startswith(value) and n != value), None)


class SettingsScreen(Screen[None]):
    """Edit the settings file: selects for choices, checked inputs for the rest."""

    BINDING_GROUP_TITLE = "Settings screen"
    BINDINGS = [
        Binding("ctrl+s", "save", "Save", priority=True, tooltip="write the settings file"),
        Binding("ctrl+r", "reload", "Reload",
                tooltip="read the settings file again (asks first when edits are unsaved)"),
        Binding("f5", "app.start_run", "Start run",
                tooltip="train with the settings on screen, saved or not"),
        Binding("f3", "app.show_run", "Run", tooltip="the run screen"),
        Binding("f4", "app.browse_checkpoints", "Saves",
                tooltip="browse, verify, prune and export the checkpoints"),
    ]

    def __init__(self, form: SettingsForm, on_saved: Callable[[], None] = lambda: None) -> None:
        """Edit `form`; `on_saved` runs after each save that reached the file."""
        super().__init__(id="settings")
        self.form = form
        self.on_saved = on_saved

    # ------------------------------------------------------------------ layout
    def compose(self) -> ComposeResult:
        yield Header()
        yield Static(id="banner")
        with VerticalScroll(id="settings-form"):
            for group, title in GROUPS.items():
                yield Static(f"{title}  [dim]\\[{group}][/]", classes="group-title")
                for name, f in FIELDS.items():
                    if f.metadata["group"] == group:
                        yield from self._row(name)
        yield Static(id="setting-doc")
        yield Footer(compact=True)

    def _row(self, name: str) -> ComposeResult:
        value = self.form.values[name]
        with Horizontal(classes="setting-row", id=f"row-{name}"):
            yield Label(name, classes="setting-name", id=f"label-{name}")
            yield self._editor(name, value)
        yield Static(classes="setting-error", id=f"error-{name}")

    def _editor(self, name: str, value: Any) -> Widget:
        field_id = f"field-{name}"
        if is_select(name):
            options = [(c, c) for c in choices_of(name, value)]
            # Typing while the list is open jumps to the first name that starts with
            # the letters typed: how the 80-odd model names are searched.
            return Select(options, value=value, allow_blank=False, compact=True, id=field_id,
                          type_to_search=True)
        if isinstance(value, bool):
            return Switch(value=value, id=field_id)
        placeholder = "(empty)" if isinstance(value, str) else ""
        if name == "weights":
            return Input(format_value(value), compact=True, id=field_id,
                         placeholder="(empty: from scratch)",
                         suggester=WeightsSuggester(self.form))
        return Input(format_value(value), compact=True, id=field_id, placeholder=placeholder)

    def on_mount(self) -> None:
        self.refresh_marks()
        self.query_one("#field-model").focus()
        if not MODELS.loaded:
            self.run_worker(self._read_model_names, thread=True, group="model-names")

    def _read_model_names(self) -> None:
        """In a worker thread: import torchvision's list, then hand it to the screen."""
        len(MODELS)
        # RuntimeError: the console closed while torchvision was loading.
        with contextlib.suppress(RuntimeError):
            self.app.call_from_thread(self.fill_model_names)

    def fill_model_names(self) -> None:
        """Offer every model name in the model select, keeping the chosen one."""
        select = self.query_one("#field-model", Select)
        value = self.form.values["model"]
        with select.prevent(Select.Changed):
            select.set_options([(c, c) for c in choices_of("model", value)])
            select.value = value

    # ------------------------------------------------------------------ editing
    @staticmethod
    def _setting_of(widget: Widget | None) -> str | None:
        if widget is None or not widget.id or not widget.id.startswith("field-"):
            return None
        return widget.id.removeprefix("field-")

    @on(Input.Changed)
    def _typed(self, event: Input.Changed) -> None:
        name = self._setting_of(event.input)
        if name is not None:
            self.form.set_text(name, event.value)
            self.refresh_marks()

    @on(Select.Changed)
    def _selected(self, event: Select.Changed) -> None:
        name = self._setting_of(event.select)
        if name is not None and event.value is not Select.NULL:
            self.form.set_value(name, event.value)
            self.refresh_marks()

    @on(Switch.Changed)
    def _switched(self, event: Switch.Changed) -> None:
        name = self._setting_of(event.switch)
        if name is not None:
            self.form.set_value(name, event.value)
            self.refresh_marks()

    def on_descendant_focus(self, event: DescendantFocus) -> None:
        name = self._setting_of(event.widget)
        if name is None:
            return
        doc = Text()
        doc.append(name, "bold")
        doc.append(f"  {FIELDS[name].metadata['doc']} ")
        doc.append(f"Allowed: {allowed_text(name)}.", "dim")
        self.query_one("#setting-doc", Static).update(doc)

    def refresh_marks(self) -> None:
        """Show per-key errors and path warnings, unsaved marks and the cross-key banner."""
        form = self.form
        dirty = form.dirty
        for name in FIELDS:
            message = form.errors.get(name) or form.path_warning(name) or ""
            error = self.query_one(f"#error-{name}", Static)
            error.update(message)
            error.display = bool(message)
            error.set_class(name not in form.errors, "warning")
            self.query_one(f"#row-{name}").set_class(name in form.errors, "invalid")
            label = self.query_one(f"#label-{name}", Label)
            label.update(f"● {name}" if name in dirty else f"  {name}")
            label.set_class(name in dirty, "dirty")
        banner = self.query_one("#banner", Static)
        problem = form.consistency_error()
        if problem:
            banner.update(f"Cannot start: {problem}")
        elif form.missing:
            banner.update(f"{form.path} does not exist yet: ctrl+s creates it, every key "
                          "commented.")
        banner.display = bool(problem or form.missing)
        banner.set_class(bool(problem), "error")
        unsaved = f" ● {len(dirty)} unsaved" if dirty else ""
        self.sub_title = f"settings · {form.path}{unsaved}"

    def load_values(self) -> None:
        """Put the form's values back into the editors (after a reload)."""
        for name, value in self.form.values.items():
            editor = self.query_one(f"#field-{name}")
            if isinstance(editor, Select):
                options = [(c, c) for c in choices_of(name, value)]
                editor.set_options(options)
                editor.value = value
            elif isinstance(editor, Switch):
                editor.value = value
            elif isinstance(editor, Input):
                editor.value = format_value(value)
        self.refresh_marks()

    def focus_setting(self, name: str) -> None:
        """Move the focus to a setting's editor (to show where a problem is)."""
        self.query_one(f"#field-{name}").focus()

    def offer_to_create(self) -> None:
        """Ask whether to write the missing settings file with the defaults."""
        self.app.push_screen(
            ConfirmScreen(f"{self.form.path} does not exist. Create it with the default "
                          "settings, every key commented?", yes="Create", no="Not now"),
            lambda create: self.action_save() if create else None,
        )

    def setting_at_fault(self, message: str) -> str | None:
        """The setting a refused start's `message` is about, whose editor to focus."""
        bad = next(iter(self.form.errors), None)
        if bad is None and "model" in message:
            bad = "model"
        return bad if bad in FIELDS else None

    # ------------------------------------------------------------------ actions
    def action_save(self) -> None:
        """Write the settings to the file, keeping its comments."""
        try:
            self.form.save()
        except (SettingsError, OSError) as exc:
            self.notify(str(exc), title="Not saved", severity="error")
            return
        self.refresh_marks()
        self.on_saved()
        self.notify(f"Saved {self.form.path}", title="Settings")

    def action_reload(self) -> None:
        """Read the file again; with unsaved edits, ask before dropping them."""
        if not self.form.dirty:
            self._reload(True)
            return
        count = len(self.form.dirty)
        self.app.push_screen(
            ConfirmScreen(f"Drop {count} unsaved change{'s' if count > 1 else ''} and read "
                          f"{self.form.path} again?", yes="Reload", no="Keep editing",
                          destructive=True),
            self._reload,
        )

    def _reload(self, yes: bool | None) -> None:
        if not yes:
            return
        try:
            self.form.reload()
        except SettingsError as exc:
            self.notify(str(exc), title="Not reloaded", severity="error")
            return
        self.load_values()
        self.notify(f"Reloaded {self.form.path}", title="Settings")
