// Start: the app, then Pinokio opens the page the helper reports once it answers.
module.exports = {
  daemon: true,
  run: [
    {
      method: "shell.run",
      params: {
        message: "python -m launcher run --no-browser",
        on: [{ event: "/Allegro Studio is ready at (http:\\/\\/\\S+)/", done: true }],
      },
    },
    {
      method: "local.set",
      params: { url: "{{input.event[1]}}" },
    },
  ],
}
