package modules

// Glob reports whether name matches the shell pattern as the kernel's module aliases
// use it (fnmatch without flags): '*' any run of bytes, '?' one byte, '[...]' a class
// with ranges and '!' or '^' negation. Unlike path.Match, '*' also crosses '/'. A
// malformed class matches nothing.
func Glob(pattern, name string) bool {
	px, nx := 0, 0
	// Backtracking point of the last '*': retry with it eating one more byte.
	starP, starN := -1, 0
	for px < len(pattern) || nx < len(name) {
		if px < len(pattern) {
			switch c := pattern[px]; c {
			case '*':
				starP, starN = px, nx
				px++
				continue
			case '?':
				if nx < len(name) {
					px++
					nx++
					continue
				}
			case '[':
				if nx < len(name) {
					ok, width := matchClass(pattern[px:], name[nx])
					if width > 0 && ok {
						px += width
						nx++
						continue
					}
					if width == 0 {
						return false
					}
				}
			case '\\':
				if px+1 < len(pattern) && nx < len(name) && pattern[px+1] == name[nx] {
					px += 2
					nx++
					continue
				}
			default:
				if nx < len(name) && name[nx] == c {
					px++
					nx++
					continue
				}
			}
		}
		if starP >= 0 && starN < len(name) {
			starN++
			px, nx = starP+1, starN
			continue
		}
		return false
	}
	return true
}

// matchClass matches c against the class at the start of p ("[...]") and returns the
// class's width in p, 0 when the class is not closed.
func matchClass(p string, c byte) (bool, int) {
	i := 1
	negate := false
	if i < len(p) && (p[i] == '!' || p[i] == '^') {
		negate = true
		i++
	}
	matched := false
	first := true
	for i < len(p) {
		if p[i] == ']' && !first {
			return matched != negate, i + 1
		}
		first = false
		lo := p[i]
		i++
		hi := lo
		if i+1 < len(p) && p[i] == '-' && p[i+1] != ']' {
			hi = p[i+1]
			i += 2
		}
		if lo <= c && c <= hi {
			matched = true
		}
	}
	return false, 0
}
