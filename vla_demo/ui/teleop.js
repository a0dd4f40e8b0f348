// Keyboard and gamepad teleop for vla-demo: sends the set of HELD keys (not key repeats) to the
// server through a hidden textbox, ignores keys typed into text fields, maps Esc to the emergency
// stop button, polls the Gamepad API, and warns before a reload would lose an unsaved episode.
(() => {
  const TELEOP = new Set(["w", "a", "s", "d", "r", "f", "g", " ", "h",
                          "arrowup", "arrowdown", "arrowleft", "arrowright"]);
  const held = new Set();
  let padKeys = new Set();
  let last = "";

  const typing = (el) => el && (el.tagName === "INPUT" || el.tagName === "TEXTAREA" || el.isContentEditable);

  function send() {
    const keys = JSON.stringify([...new Set([...held, ...padKeys])].sort());
    if (keys === last) return;
    last = keys;
    const box = document.querySelector("#vla-keys textarea, #vla-keys input");
    if (!box) return;
    box.value = keys;
    box.dispatchEvent(new Event("input", { bubbles: true }));
  }

  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape") {
      document.querySelector("#vla-estop")?.click();
      return;
    }
    if (typing(e.target)) return;
    const k = e.key.toLowerCase();
    if (!TELEOP.has(k)) return;
    e.preventDefault();
    if (!held.has(k)) { held.add(k); send(); }
  }, true);
  document.addEventListener("keyup", (e) => {
    const k = e.key.toLowerCase();
    if (held.delete(k)) send();
  }, true);
  window.addEventListener("blur", () => { held.clear(); send(); });

  function pollPad() {
    const pads = navigator.getGamepads ? [...navigator.getGamepads()].filter(Boolean) : [];
    const next = new Set();
    if (pads.length) {
      const p = pads[0];
      const ax = (i) => (p.axes[i] || 0);
      if (ax(1) < -0.4) next.add("w");
      if (ax(1) > 0.4) next.add("s");
      if (ax(0) < -0.4) next.add("a");
      if (ax(0) > 0.4) next.add("d");
      if (p.buttons[7]?.pressed) next.add("r");
      if (p.buttons[6]?.pressed) next.add("f");
      if (p.buttons[0]?.pressed) next.add("g");
      if (p.buttons[3]?.pressed) next.add("h");
    }
    if ([...next].join() !== [...padKeys].join()) { padKeys = next; send(); }
    requestAnimationFrame(pollPad);
  }
  requestAnimationFrame(pollPad);

  window.addEventListener("beforeunload", (e) => {
    const status = document.querySelector("#vla-status")?.innerText || "";
    const m = status.match(/REC (\d+) frames/);
    if (m && Number(m[1]) > 0) { e.preventDefault(); e.returnValue = ""; }
  });
})();
