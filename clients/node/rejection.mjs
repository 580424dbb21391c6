// rejection awaits call and returns the error it threw; it throws itself when the call did not fail. The
// scripts here describe with it the errors the Go tests expect.
export async function rejection(call) {
  try {
    await call();
  } catch (err) {
    return err;
  }
  throw new Error('the call did not fail');
}
