// Forms with a `data-confirm` question ask it before they are sent (cancel buttons: a cancelled job cannot resume).
document.addEventListener("submit", (event) => {
  const question = event.target.dataset && event.target.dataset.confirm;
  if (question && !window.confirm(question)) event.preventDefault();
});
