// ESLint (flat config), run by `npm run lint` and .ci/run.
// TypeScript: typescript-eslint's recommended rules, plus the type-aware rules
// that catch real bugs in a driver library (a promise nobody awaits or
// catches, a promise passed where a callback's result is ignored, awaiting a
// non-promise, a type assertion that changes nothing). Types come from
// tsconfig.test.json, which covers lib/, bench/, examples/ and test/.
import js from '@eslint/js';
import globals from 'globals';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  {
    ignores: ['node_modules/', 'build/', 'dist/', 'prebuilds/', 'docs/api/', '.vm-cache/', '.doc-snippets/'],
  },
  js.configs.recommended,
  {
    languageOptions: {
      ecmaVersion: 2022,
      sourceType: 'module',
      globals: { ...globals.node },
    },
    rules: {
      // `let { a, b }` where only `a` changes stays one declaration; a `let`
      // a closure reads before its one assignment stays `let` (as `const` it
      // would be in its temporal dead zone if the closure ran first).
      'prefer-const': ['error', { destructuring: 'all', ignoreReadBeforeAssign: true }],
      // Cheap checks for slips: == outside null checks, x === x, '${x}' in a
      // plain string, a map/filter callback that returns nothing, a loop that
      // can only run once.
      eqeqeq: ['error', 'smart'],
      'no-self-compare': 'error',
      'no-template-curly-in-string': 'error',
      'array-callback-return': 'error',
      'no-unreachable-loop': 'error',
    },
  },
  {
    files: ['**/*.ts'],
    extends: [tseslint.configs.recommended],
    languageOptions: {
      parserOptions: {
        project: './tsconfig.test.json',
        tsconfigRootDir: import.meta.dirname,
      },
    },
    rules: {
      // Promises: every one awaited or caught, none where a void callback goes,
      // no await of a non-promise, `return await` inside try (else the catch
      // misses the rejection), rejections with Error objects.
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/await-thenable': 'error',
      '@typescript-eslint/return-await': ['error', 'in-try-catch'],
      '@typescript-eslint/prefer-promise-reject-errors': ['error', { allowThrowingUnknown: true }],
      // Types: no assertion that changes nothing, no switch that misses a case
      // of a union, no object stringified as [object Object], no for-in over
      // an array, no delete of an array element, no string eval.
      '@typescript-eslint/no-unnecessary-type-assertion': 'error',
      '@typescript-eslint/switch-exhaustiveness-check': ['error', { considerDefaultExhaustiveForUnions: true }],
      '@typescript-eslint/no-base-to-string': 'error',
      '@typescript-eslint/no-for-in-array': 'error',
      '@typescript-eslint/no-array-delete': 'error',
      '@typescript-eslint/no-implied-eval': 'error',
      // A leading underscore marks a parameter or binding kept on purpose
      // (an interface's signature, a field dropped from a rest spread).
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrorsIgnorePattern: '^_', ignoreRestSiblings: true }],
      // `interface Region extends Readonly<RegionInfo> {}` names a type for the docs.
      '@typescript-eslint/no-empty-object-type': ['error', { allowInterfaces: 'with-single-extends' }],
    },
  },
  {
    // The library itself: no value typed `any` flows into typed code (it would
    // skip every check above). Not in test/, where vitest's asymmetric matchers
    // (`expect.objectContaining`) are typed `any` by design.
    files: ['lib/**/*.ts'],
    rules: {
      '@typescript-eslint/no-unsafe-assignment': 'error',
      '@typescript-eslint/no-unsafe-member-access': 'error',
      '@typescript-eslint/no-unsafe-call': 'error',
      '@typescript-eslint/no-unsafe-return': 'error',
      '@typescript-eslint/no-unsafe-argument': 'error',
    },
  },
);
