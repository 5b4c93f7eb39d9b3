// A value shown in an error message: JSON, cut to a readable length (a hostile file may hold a megabyte string).
export function brief(v: unknown, max = 60): string {
  let s: string;
  try {
    s = JSON.stringify(v) ?? String(v);
  } catch {
    s = String(v);
  }
  return s.length > max ? `${s.slice(0, max)}… (${s.length} characters)` : s;
}
