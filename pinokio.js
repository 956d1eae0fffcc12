// Pinokio (https://pinokio.computer) menu for Allegro Studio. Every script calls the same
// helper as run.sh and run.bat (python -m launcher), so the torch decision is the same.
module.exports = {
  version: "2.0",
  title: "Allegro Studio",
  description: "Text-to-video with Allegro: a local web page, queue, gallery, 30 fps.",
  icon: "assets/favicon.svg",
  menu: async (kernel, info) => {
    const installed = await info.exists(".venv")
    const running = {
      install: info.running("install.js"),
      start: info.running("start.js"),
      update: info.running("update.js"),
      reset: info.running("reset.js"),
    }
    if (running.install) {
      return [{ default: true, icon: "fa-solid fa-plug", text: "Installing", href: "install.js" }]
    }
    if (running.update) {
      return [{ default: true, icon: "fa-solid fa-rotate", text: "Updating", href: "update.js" }]
    }
    if (running.reset) {
      return [{ default: true, icon: "fa-solid fa-trash", text: "Resetting", href: "reset.js" }]
    }
    if (!installed) {
      return [{ default: true, icon: "fa-solid fa-plug", text: "Install", href: "install.js" }]
    }
    if (running.start) {
      const local = info.local("start.js")
      const items = [{ icon: "fa-solid fa-terminal", text: "Terminal", href: "start.js" }]
      if (local && local.url) {
        items.unshift({ default: true, icon: "fa-solid fa-rocket", text: "Open Allegro Studio", href: local.url })
      }
      return items
    }
    return [
      { default: true, icon: "fa-solid fa-power-off", text: "Start", href: "start.js" },
      { icon: "fa-solid fa-rotate", text: "Update", href: "update.js" },
      { icon: "fa-solid fa-plug", text: "Install", href: "install.js" },
      { icon: "fa-regular fa-circle-xmark", text: "Reset (delete the environment)", href: "reset.js" },
    ]
  },
}
