// Install: the environment in .venv, the torch build this machine's NVIDIA driver runs
// (or the CPU build), then requirements.txt. Says what to expect before the 25 GB download.
module.exports = {
  run: [
    {
      method: "shell.run",
      params: { message: "python -m launcher install" },
    },
    {
      method: "notify",
      params: { html: "Allegro Studio is installed. Click 'Start'." },
    },
  ],
}
