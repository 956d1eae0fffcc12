// Update: git pull, then reinstall only what changed (the helper's install stamp).
module.exports = {
  run: [
    {
      method: "shell.run",
      params: { message: "python -m launcher update --no-start" },
    },
  ],
}
