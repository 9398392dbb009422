// The dashboard's only door to the coordinator: every call carries the pasted token as a bearer
// token, and what the API refuses is shown as refused. There is no permission logic here.

const TOKEN_KEY = 'fedmark.dashboard.token';

/** The token of this tab (sessionStorage: gone when the tab closes), or null. */
export const savedToken = () => sessionStorage.getItem(TOKEN_KEY);
export const saveToken = (token) => sessionStorage.setItem(TOKEN_KEY, token);
export const forgetToken = () => sessionStorage.removeItem(TOKEN_KEY);

/** A refusal from the API, with its status, stable code and message (the coordinator's ErrorBody). */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** GET `path` as JSON with the tab's token; throws ApiError on any non-2xx answer. */
export async function get(path, { signal, token = savedToken() } = {}) {
  const res = await fetch(path, { headers: { authorization: `Bearer ${token ?? ''}`, accept: 'application/json' }, signal, cache: 'no-store' });
  if (res.ok) return res.json();
  let code = `HTTP_${res.status}`;
  let message = `${res.status} ${res.statusText}`;
  try {
    const body = await res.json();
    code = body.error?.code ?? code;
    message = body.error?.message ?? message;
  } catch {
    // Not an ErrorBody (a proxy's page): the status line says enough.
  }
  throw new ApiError(res.status, code, message);
}

/** `fn`'s answer, or the ApiError it threw (as `{ refused }`), so one refused panel does not blank the page. */
export async function settle(promise) {
  try {
    return { value: await promise };
  } catch (err) {
    if (err instanceof ApiError) return { refused: err };
    throw err;
  }
}
