//! `Prompt`: non-empty after trimming and at most 32K tokens, passed upstream untouched.

use crate::error::ApiError;

/// 32K tokens, counted with tiktoken's `cl100k_base` BPE (its vocabulary ships inside the
/// `tiktoken-rs` crate, so nothing is downloaded at run time).
pub const MAX_TOKENS: usize = 32 * 1024;

#[derive(Debug, Clone, PartialEq)]
pub struct Prompt(String);

impl Prompt {
    pub fn parse(raw: Option<&str>) -> Result<Prompt, ApiError> {
        let raw = raw.ok_or_else(|| ApiError::invalid("prompt", "`prompt` is required"))?;
        if raw.trim().is_empty() {
            return Err(ApiError::invalid("prompt", "`prompt` must not be empty"));
        }
        // Every token covers at least one byte, so a short prompt cannot be over the limit and
        // the tokenizer is only paid for by long prompts.
        if raw.len() > MAX_TOKENS {
            let tokens = count_tokens(raw);
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

pub fn count_tokens(text: &str) -> usize {
    tiktoken_rs::cl100k_base_singleton().encode_ordinary(text).len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_prompts_are_refused_and_text_is_kept_verbatim() {
        assert!(Prompt::parse(Some("  \n\t ")).is_err());
        assert!(Prompt::parse(None).is_err());
        let json_prompt = r##"{"scene": "a poster", "colors": ["#02eb3c", "#ff0088"]}"##;
        assert_eq!(Prompt::parse(Some(json_prompt)).map(|p| p.0), Ok(json_prompt.to_owned()));
    }

    #[test]
    fn the_limit_counts_tokens_not_bytes() {
        // "hello " is one token; 36,000 bytes of a common word stay far under 32K tokens...
        let short_in_tokens = "hello ".repeat(6_000);
        assert!(short_in_tokens.len() > MAX_TOKENS);
        assert!(Prompt::parse(Some(&short_in_tokens)).is_ok());
        // ...while random-ish digits and symbols cost about a token per two characters.
        let long_in_tokens: String =
            (0..80_000u32).map(|i| char::from(b'!' + (i * 7919 % 90) as u8)).collect();
        assert!(count_tokens(&long_in_tokens) > MAX_TOKENS);
        assert!(Prompt::parse(Some(&long_in_tokens)).is_err());
    }
}
