// Reset: delete the environment; the next Install makes it again. Videos and the
// downloaded weights are kept.
module.exports = {
  run: [
    {
      method: "fs.rm",
      params: { path: ".venv" },
    },
  ],
}
