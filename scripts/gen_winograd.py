"""Write fastconv/_kernels/winograd_transforms.h: the Winograd tile transforms, unrolled.

    python scripts/gen_winograd.py          # rewrite the header
    python scripts/gen_winograd.py --check  # exit 1 if the header is not what this writes

For each F(m×m, 3×3) (m = 2, 4) and element type (float, double) it writes three
functions that work across a run of channels or filters, 64 bytes at a time (a GCC
vector: one AVX-512 register, two AVX2 or four SSE ones in the narrower builds) and the
last few one by one:

  fastconv_wino{m}_weight_{f32,f64}(taps, tap_stride, out, point_stride, filters)
      out[p·point_stride + f] = (G g Gᵀ)[p] for the 3×3 filter g of f, whose tap (i, j) is
      taps[(i·3 + j)·tap_stride + f];
  fastconv_wino{m}_input_{f32,f64}(pixels, out, point_stride, channels)
      out[p·point_stride + c] = (Bᵀ d B)[p] for the alpha×alpha input tile d, whose pixel
      (i, j) is pixels[i·alpha + j][c] (NULL: outside the image, read as 0);
  fastconv_wino{m}_output_{f32,f64}(src, point_stride, outputs, bias, channels)
      outputs[i·m + j][c] = bias[c] + (Aᵀ M A)[i, j] for M[p] = src[p·point_stride + c]
      (an output pointer NULL: outside the image, not written; bias NULL: none).

Each transform is the 1-D transform along rows, then along columns, with the matrices'
zeros left out and their ±1 entries as additions (Lavin & Gray, 2016). tests/test_winograd.py
checks the results against the float64 reference within docs/spec.md §5's bound.
"""
from __future__ import annotations

import os
import sys
from fractions import Fraction

HERE = os.path.dirname(os.path.abspath(__file__))
HEADER = os.path.join(HERE, "..", "fastconv", "_kernels", "winograd_transforms.h")

# Bᵀ (input) and Aᵀ (output) of F(m×m, 3×3), exact.
BT = {
    2: [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
    4: [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
        [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
}
# G (filters), exact: G g Gᵀ is the transformed 3×3 filter g.
G = {
    2: [[1, 0, 0], [Fraction(1, 2)] * 3, [Fraction(1, 2), Fraction(-1, 2), Fraction(1, 2)],
        [0, 0, 1]],
    4: [[Fraction(1, 4), 0, 0], [Fraction(-1, 6)] * 3,
        [Fraction(-1, 6), Fraction(1, 6), Fraction(-1, 6)],
        [Fraction(1, 24), Fraction(1, 12), Fraction(1, 6)],
        [Fraction(1, 24), Fraction(-1, 12), Fraction(1, 6)], [0, 0, 1]],
}
AT = {
    2: [[1, 1, 1, 0], [0, 1, -1, -1]],
    4: [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
        [0, 1, -1, 8, -8, 1]],
}
TYPES = {"f32": ("float", 16), "f64": ("double", 8)}
LITERALS = {"f32": lambda value: f"{float(value)!r}f", "f64": lambda value: f"{float(value)!r}"}


def combination(row, names, literal):
    """C expression of Σ row[k]·names[k] without the zero terms (±1 as additions); the
    other coefficients written by `literal` (a C constant of the element type)."""
    terms = []
    for coef, name in zip(row, names):
        coef = Fraction(coef)
        if coef == 0:
            continue
        sign = "-" if coef < 0 else "+"
        size = abs(coef)
        term = name if size == 1 else f"({literal(size)} * {name})"
        terms.append((sign, term))
    if not terms:
        return "0"
    first_sign, first = terms[0]
    text = ("-" + first) if first_sign == "-" else first
    for sign, term in terms[1:]:
        text += f" {sign} {term}"
    return text


def transform_lines(matrix, inputs, outputs, indent, literal):
    """Assignments outputs[r] = Σ matrix[r][k]·inputs[k]."""
    return [f"{indent}{out} = {combination(row, inputs, literal)};"
            for row, out in zip(matrix, outputs)]


def input_body(m, kind, indent, literal):
    """Statements computing t{p} (p = xi·alpha + nu) from d{i}_{j}."""
    alpha = m + 2
    lines = []
    for j in range(alpha):  # rows: r{xi}_{j} = Σ_i Bᵀ[xi][i]·d{i}_{j}
        lines += transform_lines(BT[m], [f"d{i}_{j}" for i in range(alpha)],
                                 [f"{kind} r{xi}_{j}" for xi in range(alpha)], indent,
                                 literal)
    for xi in range(alpha):  # columns: t{xi·alpha+nu} = Σ_j Bᵀ[nu][j]·r{xi}_{j}
        lines += transform_lines(BT[m], [f"r{xi}_{j}" for j in range(alpha)],
                                 [f"{kind} t{xi * alpha + nu}" for nu in range(alpha)], indent,
                                 literal)
    return lines


def output_body(m, kind, indent, literal):
    """Statements computing y{i}_{j} from s{p}."""
    alpha = m + 2
    lines = []
    for nu in range(alpha):  # rows: q{i}_{nu} = Σ_xi Aᵀ[i][xi]·s{xi·alpha+nu}
        lines += transform_lines(AT[m], [f"s{xi * alpha + nu}" for xi in range(alpha)],
                                 [f"{kind} q{i}_{nu}" for i in range(m)], indent, literal)
    for i in range(m):  # columns: y{i}_{j} = Σ_nu Aᵀ[j][nu]·q{i}_{nu}
        lines += transform_lines(AT[m], [f"q{i}_{nu}" for nu in range(alpha)],
                                 [f"{kind} y{i}_{j}" for j in range(m)], indent, literal)
    return lines


def weight_body(m, kind, indent, literal):
    """Statements computing u{p} (p = xi·alpha + nu) from g{i}_{j}: G g Gᵀ."""
    alpha = m + 2
    lines = []
    for j in range(3):  # rows: h{xi}_{j} = Σ_i G[xi][i]·g{i}_{j}
        lines += transform_lines(G[m], [f"g{i}_{j}" for i in range(3)],
                                 [f"{kind} h{xi}_{j}" for xi in range(alpha)], indent, literal)
    for xi in range(alpha):  # columns: u{xi·alpha+nu} = Σ_j G[nu][j]·h{xi}_{j}
        lines += transform_lines(G[m], [f"h{xi}_{j}" for j in range(3)],
                                 [f"{kind} u{xi * alpha + nu}" for nu in range(alpha)], indent,
                                 literal)
    return lines


def lane_loops(index, count, lanes, statements):
    """The body of a function that runs over `count` elements by whole vectors of `lanes`,
    then one by one: statements(True) and statements(False) (vector and scalar code, the
    same computation) inside the two loops."""
    return ([f"    long {index} = 0;",
             f"    for (; {index} + {lanes} <= {count}; {index} += {lanes}) {{"]
            + statements(True) + ["    }", f"    for (; {index} < {count}; ++{index}) {{"]
            + statements(False) + ["    }", "}", ""])


def point_stores(vector, vec, value, index, points):
    """Statements storing values {value}0 .. {value}{points-1} to out[p·point_stride +
    index]: vector stores, or the scalar tail's element stores."""
    return [f"        {vec}_store(out + {p} * point_stride + {index}, {value}{p});" if vector
            else f"        out[{p} * point_stride + {index}] = {value}{p};"
            for p in range(points)]


def weight_function(m, suffix):
    ctype, lanes = TYPES[suffix]
    alpha = m + 2
    vec = f"fastconv_wino_{suffix}v"
    name = f"fastconv_wino{m}_weight_{suffix}"

    def statements(vector):
        lines = []
        for i in range(3):
            for j in range(3):
                lines.append(f"        {vec} g{i}_{j} = {vec}_load(taps + {i * 3 + j} * "
                             "tap_stride + f);" if vector else
                             f"        {ctype} g{i}_{j} = taps[{i * 3 + j} * tap_stride + f];")
        lines += weight_body(m, vec if vector else ctype, "        ", LITERALS[suffix])
        return lines + point_stores(vector, vec, "u", "f", alpha * alpha)

    return ([f"/* (G g Gᵀ) of 3×3 filters for F({m}×{m}, 3×3), filter by filter (see the "
             "file's comment). */",
             f"static inline void {name}(const {ctype}* taps, long tap_stride, {ctype}* out,",
             "        long point_stride, long filters) {"]
            + lane_loops("f", "filters", lanes, statements))


def input_function(m, suffix):
    ctype, lanes = TYPES[suffix]
    alpha = m + 2
    vec = f"fastconv_wino_{suffix}v"
    name = f"fastconv_wino{m}_input_{suffix}"

    def statements(vector):
        lines = []
        for i in range(alpha):
            for j in range(alpha):
                k = i * alpha + j
                lines.append(f"        {vec} d{i}_{j} = pixels[{k}] ? {vec}_load(pixels[{k}] "
                             f"+ c) : {vec}_zero();" if vector else
                             f"        {ctype} d{i}_{j} = pixels[{k}] ? pixels[{k}][c] : 0;")
        lines += input_body(m, vec if vector else ctype, "        ", LITERALS[suffix])
        return lines + point_stores(vector, vec, "t", "c", alpha * alpha)

    return ([f"/* (Bᵀ d B) of one {alpha}×{alpha} input tile of F({m}×{m}, 3×3), channel by "
             "channel (see the file's comment). */",
             f"static inline void {name}(const {ctype}* const* pixels, {ctype}* out,",
             "        long point_stride, long channels) {"]
            + lane_loops("c", "channels", lanes, statements))


def output_function(m, suffix):
    ctype, lanes = TYPES[suffix]
    alpha = m + 2
    vec = f"fastconv_wino_{suffix}v"
    name = f"fastconv_wino{m}_output_{suffix}"

    def statements(vector):
        lines = []
        for p in range(alpha * alpha):
            lines.append(f"        {vec} s{p} = {vec}_load(src + {p} * point_stride + c);"
                         if vector else f"        {ctype} s{p} = src[{p} * point_stride + c];")
        lines.append(f"        {vec} b = bias ? {vec}_load(bias + c) : {vec}_zero();" if vector
                     else f"        {ctype} b = bias ? bias[c] : 0;")
        lines += output_body(m, vec if vector else ctype, "        ", LITERALS[suffix])
        for i in range(m):
            for j in range(m):
                k = i * m + j
                lines.append(f"        if (outputs[{k}]) {vec}_store(outputs[{k}] + c, "
                             f"b + y{i}_{j});" if vector else
                             f"        if (outputs[{k}]) outputs[{k}][c] = b + y{i}_{j};")
        return lines

    return ([f"/* bias + (Aᵀ M A) of one {m}×{m} output tile of F({m}×{m}, 3×3), channel by "
             "channel (see the file's comment). */",
             f"static inline void {name}(const {ctype}* src, long point_stride,",
             f"        {ctype}* const* outputs, const {ctype}* bias, long channels) {{"]
            + lane_loops("c", "channels", lanes, statements))


def header():
    lines = [
        "/* Generated by scripts/gen_winograd.py: do not edit (change the script and run it).",
        " * Winograd F(m×m, 3×3) tile transforms, unrolled, across channels; see the script's",
        " * docstring for what each function computes. */",
        "#ifndef FASTCONV_WINOGRAD_TRANSFORMS_H",
        "#define FASTCONV_WINOGRAD_TRANSFORMS_H",
        "#include <string.h>",
        "",
        "/* 64 bytes of channels: one AVX-512 register (two AVX2, four SSE registers in the",
        "   narrower builds). Loads and stores through memcpy: no alignment assumed. */",
    ]
    for suffix, (ctype, _lanes) in TYPES.items():
        vec = f"fastconv_wino_{suffix}v"
        lines += [
            f"typedef {ctype} {vec} __attribute__((vector_size(64)));",
            f"static inline {vec} {vec}_load(const {ctype}* p) {{",
            f"    {vec} v; memcpy(&v, p, sizeof v); return v;",
            "}",
            f"static inline void {vec}_store({ctype}* p, {vec} v) {{ memcpy(p, &v, sizeof v); }}",
            f"static inline {vec} {vec}_zero(void) {{ {vec} v = {{0}}; return v; }}",
            "",
        ]
    for m in (2, 4):
        for suffix in TYPES:
            lines += weight_function(m, suffix)
            lines += input_function(m, suffix)
            lines += output_function(m, suffix)
    lines.append("#endif")
    return "\n".join(lines) + "\n"


def main(argv):
    text = header()
    if "--check" in argv:
        with open(HEADER) as handle:
            if handle.read() != text:
                print(f"{HEADER} is stale: run python scripts/gen_winograd.py")
                return 1
        return 0
    with open(HEADER, "w") as handle:
        handle.write(text)
    print(f"wrote {HEADER}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
