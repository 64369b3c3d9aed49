//! The JSON shapes of the spec's answers (`api-response-format.md`):
//! camelCase fields, lists without an article's body.

use serde_json::{Value as Json, json};

use crate::conduit::app::articles::{Article, Page};
use crate::conduit::app::comments::Comment;
use crate::conduit::app::profiles::Profile;
use crate::conduit::app::users::User;

/// `{"user": {...}}` with its token.
pub fn user(user: &User, token: &str) -> Json {
    json!({ "user": {
        "email": user.email,
        "token": token,
        "username": user.username,
        "bio": user.bio,
        "image": user.image,
    } })
}

pub fn profile(p: &Profile) -> Json {
    json!({ "username": p.username, "bio": p.bio, "image": p.image, "following": p.following })
}

/// An article; `body` only when the service read it (not in lists).
pub fn article(a: &Article) -> Json {
    let mut out = json!({
        "slug": a.slug,
        "title": a.title,
        "description": a.description,
        "tagList": a.tag_list,
        "createdAt": a.created_at,
        "updatedAt": a.updated_at,
        "favorited": a.favorited,
        "favoritesCount": a.favorites_count,
        "author": profile(&a.author),
    });
    if let Some(body) = &a.body {
        out["body"] = json!(body);
    }
    out
}

/// `{"articles": [...], "articlesCount": n}`.
pub fn page(p: &Page) -> Json {
    json!({ "articles": p.articles.iter().map(article).collect::<Vec<_>>(), "articlesCount": p.count })
}

pub fn comment(c: &Comment) -> Json {
    json!({
        "id": c.id,
        "createdAt": c.created_at,
        "updatedAt": c.updated_at,
        "body": c.body,
        "author": profile(&c.author),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jake() -> Profile {
        Profile { username: "jake".into(), bio: String::new(), image: String::new(), following: false }
    }

    #[test]
    fn a_listed_article_has_no_body_and_camel_case_fields() {
        let article = Article {
            slug: "how-to-train-your-dragon".into(),
            title: "How to train your dragon".into(),
            description: "Ever wonder how?".into(),
            body: None,
            tag_list: vec!["dragons".into()],
            created_at: "2016-02-18T03:22:56.637Z".into(),
            updated_at: "2016-02-18T03:48:35.824Z".into(),
            favorited: false,
            favorites_count: 0,
            author: jake(),
        };
        let listed = page(&Page { articles: vec![article], count: 1 });
        assert_eq!(listed["articlesCount"], 1);
        let first = &listed["articles"][0];
        assert!(first.get("body").is_none());
        assert_eq!(first["tagList"], json!(["dragons"]));
        assert_eq!(first["author"]["following"], false);
    }
}
