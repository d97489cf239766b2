//! Path globs for binary paths and L7 request paths.
//!
//! `*` matches any run of characters inside one `/`-separated segment; `**` matches
//! any run including `/`. A `/**/` in the middle also matches a single `/` (zero
//! segments), and so does a leading `**/`, as in `.gitignore`. Every other character matches itself. Matching is a
//! dynamic programme over (pattern, subject): linear in their product, never exponential.

/// A compiled glob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob {
    written: String,
    tokens: Vec<Token>,
    /// Literal bytes before the first wildcard and after the last one: most subjects
    /// are rejected by these two comparisons without running the matcher.
    prefix_len: usize,
    suffix_len: usize,
    literal: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token {
    Byte(u8),
    /// `*`: any bytes but `/`.
    Star,
    /// `**`: any bytes.
    Globstar,
    /// `**/` after a `/`: zero or more whole segments (`` or `a/` or `a/b/`).
    Dirs,
}

impl Glob {
    /// Compile a pattern. Never fails: runs of three or more `*` behave like `**`.
    pub fn new(pattern: &str) -> Glob {
        let b = pattern.as_bytes();
        let mut tokens = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'*' {
                let start = i;
                while i < b.len() && b[i] == b'*' {
                    i += 1;
                }
                if i - start == 1 {
                    tokens.push(Token::Star);
                } else if i - start == 2
                    && (start == 0 || b[start - 1] == b'/')
                    && i < b.len()
                    && b[i] == b'/'
                {
                    tokens.push(Token::Dirs);
                    i += 1;
                } else {
                    tokens.push(Token::Globstar);
                }
            } else {
                tokens.push(Token::Byte(b[i]));
                i += 1;
            }
        }
        // Literal runs at both ends, counted in tokens (a `**/` token owns its `/`).
        let is_byte = |t: &Token| matches!(t, Token::Byte(_));
        let prefix_len = tokens.iter().take_while(|t| is_byte(t)).count();
        let suffix_len = tokens.iter().rev().take_while(|t| is_byte(t)).count();
        Glob {
            written: pattern.to_string(),
            literal: prefix_len == tokens.len(),
            tokens,
            prefix_len,
            suffix_len,
        }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.written
    }

    /// True if the pattern contains a wildcard.
    pub fn is_pattern(s: &str) -> bool {
        s.contains('*')
    }

    /// Does the whole `subject` match?
    pub fn matches(&self, subject: &str) -> bool {
        if self.literal {
            return subject == self.written;
        }
        // Bytes at both ends of the pattern are the same as at the ends of `written`
        // (tokens map one-to-one to bytes there).
        let w = self.written.as_bytes();
        let s = subject.as_bytes();
        if !s.starts_with(&w[..self.prefix_len]) || !s.ends_with(&w[w.len() - self.suffix_len..]) {
            return false;
        }
        let n = s.len();
        // cur[j]: pattern prefix (processed so far) matches s[..j].
        let mut cur = vec![false; n + 1];
        let mut next = vec![false; n + 1];
        cur[0] = true;
        for t in &self.tokens {
            next.fill(false);
            match *t {
                Token::Byte(c) => {
                    for j in 0..n {
                        if cur[j] && s[j] == c {
                            next[j + 1] = true;
                        }
                    }
                }
                Token::Star => {
                    let mut reach = false;
                    for j in 0..=n {
                        if cur[j] {
                            reach = true;
                        }
                        next[j] = reach;
                        if j < n && s[j] == b'/' {
                            reach = false;
                        }
                    }
                }
                Token::Globstar => {
                    let mut reach = false;
                    for j in 0..=n {
                        reach |= cur[j];
                        next[j] = reach;
                    }
                }
                Token::Dirs => {
                    // Zero segments, or any run ending with '/'.
                    let mut reach = false;
                    for j in 0..=n {
                        if cur[j] {
                            next[j] = true;
                        }
                        if reach && j > 0 && s[j - 1] == b'/' {
                            next[j] = true;
                        }
                        reach |= cur[j];
                    }
                }
            }
            if !next.iter().any(|&x| x) {
                return false;
            }
            std::mem::swap(&mut cur, &mut next);
        }
        cur[n]
    }
}

#[cfg(test)]
mod tests {
    use super::Glob;

    fn m(p: &str, s: &str) -> bool {
        Glob::new(p).matches(s)
    }

    #[test]
    fn star_stays_in_one_segment() {
        assert!(m("/usr/bin/python3*", "/usr/bin/python3.12"));
        assert!(!m("/usr/bin/*", "/usr/bin/x/y"));
        assert!(m("/usr/bin/*", "/usr/bin/"));
    }

    #[test]
    fn globstar_crosses_segments() {
        assert!(m(
            "/sandbox/.uv/python/**",
            "/sandbox/.uv/python/cpython-3.12/bin/python3"
        ));
        assert!(m(
            "/sandbox/.uv/python/**/python3*",
            "/sandbox/.uv/python/a/b/python3.12"
        ));
        assert!(m(
            "/sandbox/.uv/python/**/python3*",
            "/sandbox/.uv/python/python3"
        ));
        assert!(!m(
            "/sandbox/.uv/python/**/python3*",
            "/sandbox/.uv/pythonx/python3"
        ));
        assert!(m("/**", "/anything/at/all"));
        assert!(m(
            "/**/info/refs*",
            "/org/repo.git/info/refs?service=git-upload-pack"
        ));
        assert!(m("/**/info/refs*", "/info/refs"));
        assert!(m("/repos/**", "/repos/a/b"));
        assert!(!m("/repos/**", "/other/a"));
    }

    #[test]
    fn literal() {
        assert!(m("/usr/bin/git", "/usr/bin/git"));
        assert!(!m("/usr/bin/git", "/usr/bin/gitk"));
        assert!(!m("/usr/bin/git", "/usr/bin/gi"));
    }
}
