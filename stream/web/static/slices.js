// Long loops in short slices. A 100,000-event run is read, filtered and replayed in
// loops over every event; one such loop in one task would freeze the page (no
// typing, no scrolling) for as long as it runs, and that grows with the run and
// with a slow or busy machine. So a loop checks the clock as it goes and, once its
// slice is used up, lets the browser paint and handle input before going on.

const SLICE_MS = 8; // half a frame: input stays answered within one frame or two

/** A clock for one loop: `due()` once the slice is used up, `pause()` to yield and start the next. */
export function slicer(budgetMs = SLICE_MS) {
  let start = performance.now();
  return {
    due: () => performance.now() - start >= budgetMs,
    async pause() {
      await new Promise((resolve) => setTimeout(resolve, 0));
      start = performance.now();
    },
  };
}
