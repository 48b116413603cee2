//! `Prompt`: not blank (whitespace and zero-width characters do not count) and at most 32K
//! tokens, passed upstream untouched. Counting is bounded: it stops once the limit is passed, and
//! a prompt too long to be under the limit is refused without counting.

use crate::error::ApiError;

/// 32K tokens, counted with tiktoken's `cl100k_base` BPE (its vocabulary ships inside the
/// `tiktoken-rs` crate, so nothing is downloaded at run time).
pub const MAX_TOKENS: usize = 32 * 1024;

/// BPE merging is quadratic in the length of one pre-tokenized piece (a long run without spaces),
/// so text is counted in pieces of at most this many bytes.
const PIECE_BYTES: usize = 256;

/// Every piece is at least one token, so a prompt of more bytes than this is over the limit
/// whatever it says, and is refused without being counted.
const MAX_COUNTED_BYTES: usize = PIECE_BYTES * MAX_TOKENS;

/// Characters that show nothing, beside Unicode whitespace: a prompt of only these is blank.
const ZERO_WIDTH: [char; 5] = ['\u{200B}', '\u{200C}', '\u{200D}', '\u{2060}', '\u{FEFF}'];

#[derive(Debug, Clone, PartialEq)]
pub struct Prompt(String);

impl Prompt {
    pub async fn parse(raw: Option<&str>) -> Result<Prompt, ApiError> {
        let raw = raw.ok_or_else(|| ApiError::invalid("prompt", "`prompt` is required"))?;
        if raw.chars().all(|c| c.is_whitespace() || ZERO_WIDTH.contains(&c)) {
            return Err(ApiError::invalid("prompt", "`prompt` must not be empty"));
        }
        let too_long = || {
            ApiError::invalid(
                "prompt",
                format!("`prompt` is more than {MAX_TOKENS} tokens long; the limit is {MAX_TOKENS}"),
            )
        };
        if raw.len() > MAX_COUNTED_BYTES {
            return Err(too_long());
        }
        // Every token covers at least one byte, so a short prompt cannot be over the limit and
        // the tokenizer is only paid for by long prompts, off the async workers.
        if raw.len() > MAX_TOKENS {
            let text = raw.to_owned();
            let over =
                tokio::task::spawn_blocking(move || count_tokens_up_to(&text, MAX_TOKENS) > MAX_TOKENS)
                    .await
                    .map_err(|e| ApiError::internal(format!("token counting failed: {e}")))?;
            if over {
                return Err(too_long());
            }
        }
        Ok(Prompt(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Tokens in `text`. Pieces are cut before whitespace where possible, where tiktoken's own
/// pre-tokenizer cuts too, so ordinary text counts exactly; a long run without whitespace may
/// count a token or two more per cut, never fewer.
#[cfg(test)]
pub(super) fn count_tokens(text: &str) -> usize {
    count_tokens_up_to(text, usize::MAX)
}

/// Tokens in `text` as `count_tokens` counts them, but counting stops as soon as the total
/// passes `limit` (the result is then some number above `limit`).
fn count_tokens_up_to(text: &str, limit: usize) -> usize {
    let bpe = tiktoken_rs::cl100k_base_singleton();
    let mut total = 0usize;
    for piece in pieces(text, PIECE_BYTES) {
        total = total.saturating_add(bpe.encode_ordinary(piece).len());
        if total > limit {
            break;
        }
    }
    total
}

/// `text` in consecutive pieces of at most `max` bytes (`max` ≥ 4), each cut at a char boundary,
/// before the last whitespace of the window when there is one.
fn pieces(text: &str, max: usize) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut cut = rest.len().min(max);
        if cut < rest.len() {
            while !rest.is_char_boundary(cut) {
                cut -= 1;
            }
            if let Some(space) = rest[..cut].rfind(char::is_whitespace).filter(|i| *i > 0) {
                cut = space;
            }
        }
        let (piece, tail) = rest.split_at(cut);
        rest = tail;
        Some(piece)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn blank_prompts_are_refused_and_text_is_kept_verbatim() {
        assert!(Prompt::parse(Some("  \n\t ")).await.is_err());
        assert!(Prompt::parse(None).await.is_err());
        let json_prompt = r##"{"scene": "a poster", "colors": ["#02eb3c", "#ff0088"]}"##;
        assert_eq!(Prompt::parse(Some(json_prompt)).await.map(|p| p.0), Ok(json_prompt.to_owned()));
    }

    #[tokio::test]
    async fn the_limit_counts_tokens_not_bytes() {
        // "hello " is one token; 36,000 bytes of a common word stay far under 32K tokens...
        let short_in_tokens = "hello ".repeat(6_000);
        assert!(short_in_tokens.len() > MAX_TOKENS);
        assert!(Prompt::parse(Some(&short_in_tokens)).await.is_ok());
        // ...while random-ish digits and symbols cost about a token per two characters.
        let long_in_tokens: String =
            (0..80_000u32).map(|i| char::from(b'!' + (i * 7919 % 90) as u8)).collect();
        assert!(count_tokens(&long_in_tokens) > MAX_TOKENS);
        assert!(Prompt::parse(Some(&long_in_tokens)).await.is_err());
    }

    #[test]
    fn counting_in_pieces_matches_whole_text_for_ordinary_prose() {
        let prose = "The quick brown fox jumps over the lazy dog, #ff0088 and all. ".repeat(200);
        let whole = tiktoken_rs::cl100k_base_singleton().encode_ordinary(&prose).len();
        assert_eq!(count_tokens(&prose), whole);
        let joined: String = pieces("héllo wörld ünïcode ".repeat(50).as_str(), 7).collect();
        assert_eq!(joined, "héllo wörld ünïcode ".repeat(50));
    }

    #[tokio::test]
    async fn whitespace_and_zero_width_characters_alone_are_an_empty_prompt() {
        for blank in [
            "\u{200B}",
            "\u{200B}\u{200C}\u{200D}\u{2060}\u{FEFF}",
            " \u{200B} \n\u{FEFF}\t",
            "\u{3000}\u{00A0}\u{2028}\u{205F}",
            &"\u{200B}".repeat(100_000),
        ] {
            let err = Prompt::parse(Some(blank)).await.expect_err("blank");
            assert!(
                matches!(&err, ApiError::InvalidRequest { param: Some(p), .. } if p == "prompt"),
                "{err:?}"
            );
            assert!(err.to_string().contains("empty"), "{err}");
        }
        let kept = "\u{200B}a cat\u{200D}";
        assert_eq!(Prompt::parse(Some(kept)).await.map(|p| p.0), Ok(kept.to_owned()));
    }

    #[tokio::test]
    async fn a_31_megabyte_prompt_is_refused_naming_prompt() {
        // Over 256 bytes per allowed token: refused before the tokenizer sees it.
        let huge = "a cat on a mat ".repeat(31 * 1024 * 1024 / 15);
        assert!(huge.len() > MAX_COUNTED_BYTES);
        let err = Prompt::parse(Some(&huge)).await.expect_err("too long");
        assert!(matches!(&err, ApiError::InvalidRequest { param: Some(p), .. } if p == "prompt"), "{err:?}");
        // Just under that bound it is counted, and counting stops once the limit is passed.
        let counted = "a cat on a mat ".repeat(MAX_COUNTED_BYTES / 15);
        assert!(counted.len() <= MAX_COUNTED_BYTES);
        assert!(Prompt::parse(Some(&counted)).await.is_err());
        let stopped = count_tokens_up_to(&counted, 10);
        assert!(stopped > 10 && stopped < 300, "stopped within a piece of the limit: {stopped}");
    }

    #[test]
    fn counting_up_to_a_limit_is_exact_below_it() {
        let prose = "The quick brown fox jumps over the lazy dog. ".repeat(100);
        assert_eq!(count_tokens_up_to(&prose, MAX_TOKENS), count_tokens(&prose));
    }

    #[tokio::test]
    async fn a_megabyte_without_whitespace_is_counted_and_refused() {
        let run = "a".repeat(1024 * 1024);
        assert!(Prompt::parse(Some(&run)).await.is_err());
    }
}
