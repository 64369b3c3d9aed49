//! Slugs: an article's title as a path segment of `/api/articles/{slug}`.

/// The longest slug, before a suffix.
const MAX: usize = 96;

/// `How to train your dragon` → `how-to-train-your-dragon`: ASCII letters
/// and digits, lower-cased, apostrophes dropped (`Ann's` → `anns`), every
/// other run of characters one `-`. A title
/// with none of them gives `article`.
pub fn slugify(title: &str) -> String {
    let mut slug = String::new();
    for c in title.chars() {
        if c.is_ascii_alphanumeric() {
            if slug.len() >= MAX {
                break;
            }
            slug.push(c.to_ascii_lowercase());
        } else if c == '\'' || c == '\u{2019}' {
            continue;
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    match slug.trim_end_matches('-') {
        "" => "article".into(),
        // `/api/articles/feed` is the feed, not an article.
        "feed" => "feed-article".into(),
        slug => slug.into(),
    }
}

/// `base` with a suffix from `random`, for a slug already taken:
/// `how-to-train-your-dragon-3f9a1c`.
pub fn suffixed(base: &str, random: i64) -> String {
    format!("{base}-{:06x}", random & 0xff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_become_path_segments() {
        assert_eq!(slugify("How to train your dragon"), "how-to-train-your-dragon");
        assert_eq!(slugify("  Did you train your dragon?! "), "did-you-train-your-dragon");
        assert_eq!(slugify("../../etc/passwd"), "etc-passwd");
        assert_eq!(slugify("日本語"), "article");
        assert_eq!(slugify("Feed!"), "feed-article");
        assert_eq!(slugify("Ann's notes"), "anns-notes");
        assert_eq!(slugify(&"a".repeat(500)).len(), MAX);
        assert_eq!(suffixed("x", 0x1234_5678), "x-345678");
    }
}
