//! `Prompt`: non-empty after trimming and at most 32K tokens, passed upstream untouched.

use crate::error::ApiError;

/// 32K tokens, counted with tiktoken's `cl100k_base` BPE (its vocabulary ships inside the
/// `tiktoken-rs` crate, so nothing is downloaded at run time).
pub(super) const MAX_TOKENS: usize = 32 * 1024;

/// BPE merging is quadratic in the length of one pre-tokenized piece (a long run without spaces),
/// so text is counted in pieces of at most this many bytes.
const PIECE_BYTES: usize = 256;

#[derive(Debug, Clone, PartialEq)]
pub struct Prompt(String);

impl Prompt {
    pub async fn parse(raw: Option<&str>) -> Result<Prompt, ApiError> {
        let raw = raw.ok_or_else(|| ApiError::invalid("prompt", "`prompt` is required"))?;
        if raw.trim().is_empty() {
            return Err(ApiError::invalid("prompt", "`prompt` must not be empty"));
        }
        // Every token covers at least one byte, so a short prompt cannot be over the limit and
        // the tokenizer is only paid for by long prompts, off the async workers.
        if raw.len() > MAX_TOKENS {
            let text = raw.to_owned();
            let tokens = tokio::task::spawn_blocking(move || count_tokens(&text))
                .await
                .map_err(|e| ApiError::internal(format!("token counting failed: {e}")))?;
            if tokens > MAX_TOKENS {
                return Err(ApiError::invalid(
                    "prompt",
                    format!("`prompt` is {tokens} tokens long; the limit is {MAX_TOKENS}"),
                ));
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
pub(super) fn count_tokens(text: &str) -> usize {
    let bpe = tiktoken_rs::cl100k_base_singleton();
    pieces(text, PIECE_BYTES).map(|piece| bpe.encode_ordinary(piece).len()).sum()
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
    async fn a_megabyte_without_whitespace_is_counted_and_refused() {
        let run = "a".repeat(1024 * 1024);
        assert!(Prompt::parse(Some(&run)).await.is_err());
    }
}
