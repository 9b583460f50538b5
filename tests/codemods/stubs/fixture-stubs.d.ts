declare module 'react' {
  export function useState<T>(initial: T): [T, (value: T) => void];
  export function useEffect(effect: () => void, deps?: unknown[]): void;
}
declare module 'react/jsx-runtime' {
  export const jsx: any;
  export const jsxs: any;
  export const Fragment: any;
}
declare namespace JSX {
  interface IntrinsicElements {
    [name: string]: any;
  }
}
declare module 'rxjs' {
  export function from<T>(input: Iterable<T>): { pipe(...operators: unknown[]): unknown };
  export function map<T, R>(project: (value: T) => R): unknown;
}
