//! Conduit service `articles`: articles, their tags (in `article_tags`, a
//! tag's place kept in `position`) and favorites. Lists are one read for
//! the page, one for its count, one for its tags and one call to
//! `profiles` for its authors, whatever the page's length. Only an
//! article's author may change or delete it (403 otherwise).

sluice_guest::generate!("conduit:app/articles-service", "../wit");

mod slug;

use std::collections::HashMap;

use conduit::app::profiles::{self, Problem, Profile};
use exports::conduit::app::articles::{Article, Draft, Filter, Guest, Page, Revision};
use sluice_guest::types::Value;
use sluice_guest::{from, row, time, to};

const CHANNEL: &str = "main";
/// The most articles one page shows.
const MAX_LIMIT: u32 = 100;
/// The most tags one article has, and the longest tag.
const MAX_TAGS: usize = 20;
const MAX_TAG: usize = 64;
/// The longest title and description, and body, in bytes.
const MAX_TITLE: usize = 256;
const MAX_BODY: usize = 64 << 10;
/// The most tags `tags` lists.
const MAX_TAG_LIST: u32 = 1000;

/// The columns every read of articles takes, for `viewer` (`?1`).
const COLUMNS: &str = "a.id, a.slug, a.title, a.description, a.author, a.created_at, a.updated_at, \
     (SELECT COUNT(*) FROM favorites f WHERE f.article = a.id) AS favorites_count, \
     EXISTS (SELECT 1 FROM favorites f WHERE f.article = a.id AND f.user_id = ?1) AS favorited";

struct Component;

impl Guest for Component {
    fn search(viewer: Option<i64>, filter: Filter) -> Result<Page, Problem> {
        let mut conditions: Vec<(&str, Value)> = Vec::new();
        if let Some(tag) = filter.tag {
            conditions
                .push(("EXISTS (SELECT 1 FROM article_tags t WHERE t.article = a.id AND t.tag = ?N)", tag.into()));
        }
        if let Some(author) = filter.author {
            conditions.push(("a.author IN (SELECT u.id FROM users u WHERE u.username = ?N)", author.into()));
        }
        if let Some(fan) = filter.favorited {
            conditions.push((
                "EXISTS (SELECT 1 FROM favorites f JOIN users u ON u.id = f.user_id \
                 WHERE f.article = a.id AND u.username = ?N)",
                fan.into(),
            ));
        }
        page(viewer, &conditions, filter.limit, filter.offset)
    }

    fn feed(viewer: i64, limit: u32, offset: u32) -> Result<Page, Problem> {
        let follows = ("a.author IN (SELECT f.followed FROM follows f WHERE f.follower = ?N)", viewer.into());
        page(Some(viewer), &[follows], limit, offset)
    }

    fn read(viewer: Option<i64>, slug: String) -> Result<Article, Problem> {
        let found = by_slug(viewer, &slug)?;
        shown(viewer, found)
    }

    fn create(viewer: i64, draft: Draft) -> Result<Article, Problem> {
        let mut reasons = Vec::new();
        check_text("title", &draft.title, MAX_TITLE, &mut reasons);
        check_text("description", &draft.description, MAX_TITLE, &mut reasons);
        check_text("body", &draft.body, MAX_BODY, &mut reasons);
        let tags = tags_of(draft.tag_list, &mut reasons);
        if !reasons.is_empty() {
            return Err(Problem::Invalid(reasons));
        }
        let id = time::fresh_id();
        let slug = free_slug(&draft.title, None)?;
        let now = time::now_rfc3339();
        to::insert(
            CHANNEL,
            "articles",
            &row(&[
                ("id", id.into()),
                ("slug", slug.as_str().into()),
                ("title", draft.title.as_str().into()),
                ("description", draft.description.as_str().into()),
                ("body", draft.body.as_str().into()),
                ("author", viewer.into()),
                ("created_at", now.as_str().into()),
                ("updated_at", now.as_str().into()),
            ]),
        )
        .map_err(Problem::Store)?;
        for (position, tag) in tags.iter().enumerate() {
            let position = i64::try_from(position).unwrap_or(i64::MAX);
            to::insert(
                CHANNEL,
                "article_tags",
                &row(&[("article", id.into()), ("tag", tag.as_str().into()), ("position", position.into())]),
            )
            .map_err(Problem::Store)?;
        }
        let stored = Stored {
            id,
            slug,
            title: draft.title,
            description: draft.description,
            body: Some(draft.body),
            author: viewer,
            created_at: now.clone(),
            updated_at: now,
            favorites_count: 0,
            favorited: false,
        };
        Ok(assemble(stored, tags, author(Some(viewer), viewer)?))
    }

    fn edit(viewer: i64, slug: String, edit: Revision) -> Result<Article, Problem> {
        let mut found = own(viewer, &slug)?;
        let mut reasons = Vec::new();
        let mut set: Vec<(&str, Value)> = Vec::new();
        if let Some(title) = edit.title.filter(|t| *t != found.title) {
            check_text("title", &title, MAX_TITLE, &mut reasons);
            if reasons.is_empty() {
                found.slug = free_slug(&title, Some(found.id))?;
                set.push(("slug", found.slug.as_str().into()));
            }
            set.push(("title", title.as_str().into()));
            found.title = title;
        }
        if let Some(description) = edit.description {
            check_text("description", &description, MAX_TITLE, &mut reasons);
            set.push(("description", description.as_str().into()));
            found.description = description;
        }
        if let Some(body) = edit.body {
            check_text("body", &body, MAX_BODY, &mut reasons);
            set.push(("body", body.as_str().into()));
            found.body = Some(body);
        }
        if !reasons.is_empty() {
            return Err(Problem::Invalid(reasons));
        }
        if !set.is_empty() {
            found.updated_at = time::now_rfc3339();
            set.push(("updated_at", found.updated_at.as_str().into()));
            let ticket = to::update(CHANNEL, "articles", &row(&[("id", found.id.into())]), &row(&set))
                .map_err(Problem::Store)?;
            to::expect(ticket, 1).map_err(Problem::Store)?;
        }
        shown(Some(viewer), found)
    }

    fn remove(viewer: i64, slug: String) -> Result<i64, Problem> {
        let found = own(viewer, &slug)?;
        let key = |column: &str| row(&[(column, found.id.into())]);
        to::delete(CHANNEL, "article_tags", &key("article")).map_err(Problem::Store)?;
        to::delete(CHANNEL, "favorites", &key("article")).map_err(Problem::Store)?;
        let ticket = to::delete(CHANNEL, "articles", &key("id")).map_err(Problem::Store)?;
        to::expect(ticket, 1).map_err(Problem::Store)?;
        Ok(found.id)
    }

    fn favorite(viewer: i64, slug: String) -> Result<Article, Problem> {
        let mut found = by_slug(Some(viewer), &slug)?;
        if !found.favorited {
            to::insert(CHANNEL, "favorites", &row(&[("user_id", viewer.into()), ("article", found.id.into())]))
                .map_err(Problem::Store)?;
            found.favorited = true;
            found.favorites_count += 1;
        }
        shown(Some(viewer), found)
    }

    fn unfavorite(viewer: i64, slug: String) -> Result<Article, Problem> {
        let mut found = by_slug(Some(viewer), &slug)?;
        if found.favorited {
            to::delete(CHANNEL, "favorites", &row(&[("user_id", viewer.into()), ("article", found.id.into())]))
                .map_err(Problem::Store)?;
            found.favorited = false;
            found.favorites_count = found.favorites_count.saturating_sub(1);
        }
        shown(Some(viewer), found)
    }

    fn id_of(slug: String) -> Result<i64, Problem> {
        let rows = from::query(CHANNEL, "SELECT id FROM articles WHERE slug = ?1", &[slug.as_str().into()])
            .map_err(Problem::Store)?;
        rows.value(0, "id").ok_or_else(|| not_found(&slug))
    }

    fn tags() -> Result<Vec<String>, Problem> {
        let rows = from::query(
            CHANNEL,
            "SELECT tag FROM article_tags GROUP BY tag ORDER BY COUNT(*) DESC, tag LIMIT ?1",
            &[MAX_TAG_LIST.into()],
        )
        .map_err(Problem::Store)?;
        Ok(rows.iter().filter_map(|r| r.get("tag")).collect())
    }
}

export!(Component);

/// An article as its row holds it.
struct Stored {
    id: i64,
    slug: String,
    title: String,
    description: String,
    /// Read for one article, not for lists.
    body: Option<String>,
    author: i64,
    created_at: String,
    updated_at: String,
    favorites_count: u32,
    favorited: bool,
}

fn stored_of(r: &sluice_guest::RowRef<'_>) -> Option<Stored> {
    Some(Stored {
        id: r.get("id")?,
        slug: r.get("slug")?,
        title: r.get("title")?,
        description: r.get("description")?,
        body: r.get::<String>("body"),
        author: r.get("author")?,
        created_at: r.get("created_at")?,
        updated_at: r.get("updated_at")?,
        favorites_count: r.get("favorites_count")?,
        favorited: r.get("favorited")?,
    })
}

/// One page of the articles that meet every condition, newest first, and
/// their count. Each condition has one parameter, `?N` in its text.
fn page(viewer: Option<i64>, conditions: &[(&str, Value)], limit: u32, offset: u32) -> Result<Page, Problem> {
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(Problem::Invalid(vec![format!("limit must be from 1 to {MAX_LIMIT}")]));
    }
    // The page's statement binds the viewer first; the count's does not.
    let filter = |first: usize| {
        let parts: Vec<String> = conditions
            .iter()
            .enumerate()
            .map(|(i, (text, _))| text.replace("?N", &format!("?{}", first + i)))
            .collect();
        if parts.is_empty() { String::new() } else { format!(" WHERE {}", parts.join(" AND ")) }
    };
    let values = conditions.iter().map(|(_, value)| value.clone());
    let mut params: Vec<Value> = std::iter::once(viewer.into()).chain(values.clone()).collect();
    params.push(limit.into());
    params.push(offset.into());
    let sql = format!(
        "SELECT {COLUMNS} FROM articles a{} ORDER BY a.created_at DESC, a.id DESC LIMIT ?{} OFFSET ?{}",
        filter(2),
        params.len() - 1,
        params.len()
    );
    let rows = from::query(CHANNEL, &sql, &params).map_err(Problem::Store)?;
    let found: Vec<Stored> = rows.iter().filter_map(|r| stored_of(&r)).collect();
    let counted = from::query(
        CHANNEL,
        &format!("SELECT COUNT(*) AS n FROM articles a{}", filter(1)),
        &values.collect::<Vec<_>>(),
    )
    .map_err(Problem::Store)?;
    let count = counted.value(0, "n").unwrap_or(0);
    let mut tags = tags_by_article(&found.iter().map(|s| s.id).collect::<Vec<_>>())?;
    let authors = authors(viewer, found.iter().map(|s| s.author).collect())?;
    let articles = found
        .into_iter()
        .filter_map(|s| {
            let author = authors.get(&s.author).cloned()?;
            let tags = tags.remove(&s.id).unwrap_or_default();
            Some(assemble(s, tags, author))
        })
        .collect();
    Ok(Page { articles, count })
}

/// The tags of each article, each in its place.
fn tags_by_article(ids: &[i64]) -> Result<HashMap<i64, Vec<String>>, Problem> {
    let mut by = HashMap::new();
    if ids.is_empty() {
        return Ok(by);
    }
    let marks: Vec<String> = (1..=ids.len()).map(|i| format!("?{i}")).collect();
    let sql = format!(
        "SELECT article, tag FROM article_tags WHERE article IN ({}) ORDER BY article, position",
        marks.join(", ")
    );
    let params: Vec<Value> = ids.iter().map(|&id| Value::Integer(id)).collect();
    let rows = from::query(CHANNEL, &sql, &params).map_err(Problem::Store)?;
    for r in rows.iter() {
        if let (Some(article), Some(tag)) = (r.get::<i64>("article"), r.get::<String>("tag")) {
            by.entry(article).or_insert_with(Vec::new).push(tag);
        }
    }
    Ok(by)
}

/// The profiles of `ids`, by id, in one call to `profiles`.
fn authors(viewer: Option<i64>, ids: Vec<i64>) -> Result<HashMap<i64, Profile>, Problem> {
    Ok(profiles::by_ids(viewer, &ids)?.into_iter().collect())
}

fn author(viewer: Option<i64>, id: i64) -> Result<Profile, Problem> {
    authors(viewer, vec![id])?.remove(&id).ok_or_else(|| Problem::NotFound(format!("no author {id}")))
}

/// One article with its body, as `viewer` sees it; 404 when there is none.
fn by_slug(viewer: Option<i64>, slug: &str) -> Result<Stored, Problem> {
    let sql = format!("SELECT {COLUMNS}, a.body FROM articles a WHERE a.slug = ?2");
    let rows = from::query(CHANNEL, &sql, &[viewer.into(), slug.into()]).map_err(Problem::Store)?;
    rows.iter().next().and_then(|r| stored_of(&r)).ok_or_else(|| not_found(slug))
}

/// `viewer`'s own article `slug`: 404 when there is none, 403 when it is
/// another's.
fn own(viewer: i64, slug: &str) -> Result<Stored, Problem> {
    let found = by_slug(Some(viewer), slug)?;
    if found.author != viewer {
        return Err(Problem::Forbidden(format!("the article {slug} is not yours")));
    }
    Ok(found)
}

/// The article `found`, with its tags and author.
fn shown(viewer: Option<i64>, found: Stored) -> Result<Article, Problem> {
    let tags = tags_by_article(&[found.id])?.remove(&found.id).unwrap_or_default();
    let author = author(viewer, found.author)?;
    Ok(assemble(found, tags, author))
}

fn assemble(s: Stored, tag_list: Vec<String>, author: Profile) -> Article {
    Article {
        slug: s.slug,
        title: s.title,
        description: s.description,
        body: s.body,
        tag_list,
        created_at: s.created_at,
        updated_at: s.updated_at,
        favorited: s.favorited,
        favorites_count: s.favorites_count,
        author,
    }
}

/// A slug for `title` no other article has (`except`, the article being
/// renamed, may keep its own). The read of each candidate is kept, so two
/// scopes cannot save the same slug: the second's save is a conflict and
/// it runs again, choosing another.
fn free_slug(title: &str, except: Option<i64>) -> Result<String, Problem> {
    let base = slug::slugify(title);
    let mut candidate = base.clone();
    for _ in 0..4 {
        let rows = from::query(CHANNEL, "SELECT id FROM articles WHERE slug = ?1", &[candidate.as_str().into()])
            .map_err(Problem::Store)?;
        match rows.value::<i64>(0, "id") {
            None => return Ok(candidate),
            Some(id) if Some(id) == except => return Ok(candidate),
            Some(_) => candidate = slug::suffixed(&base, time::fresh_id()),
        }
    }
    Err(Problem::Invalid(vec!["title gives a slug that is taken; choose another title".into()]))
}

fn not_found(slug: &str) -> Problem {
    Problem::NotFound(format!("no article {slug}"))
}

fn check_text(field: &str, text: &str, max: usize, reasons: &mut Vec<String>) {
    if text.trim().is_empty() {
        reasons.push(format!("{field} can't be blank"));
    } else if text.len() > max {
        reasons.push(format!("{field} is longer than {max} bytes"));
    }
}

/// The tags, each once, in the order given.
fn tags_of(given: Vec<String>, reasons: &mut Vec<String>) -> Vec<String> {
    let mut tags: Vec<String> = Vec::new();
    for tag in given {
        let tag = tag.trim().to_string();
        if tag.is_empty() || tag.len() > MAX_TAG {
            reasons.push(format!("a tag must be 1 to {MAX_TAG} bytes"));
        } else if !tags.contains(&tag) {
            tags.push(tag);
        }
    }
    if tags.len() > MAX_TAGS {
        reasons.push(format!("an article has at most {MAX_TAGS} tags"));
    }
    tags
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_kept_once_in_their_order() {
        let mut reasons = Vec::new();
        let given = ["dragons", " training ", "dragons"].map(String::from).to_vec();
        assert_eq!(tags_of(given, &mut reasons), ["dragons", "training"]);
        assert!(reasons.is_empty());
        tags_of(vec![String::new()], &mut reasons);
        assert_eq!(reasons, ["a tag must be 1 to 64 bytes"]);
    }

    #[test]
    fn blank_and_long_fields_are_refused() {
        let mut reasons = Vec::new();
        check_text("title", " ", MAX_TITLE, &mut reasons);
        check_text("body", &"x".repeat(MAX_BODY + 1), MAX_BODY, &mut reasons);
        assert_eq!(reasons, ["title can't be blank", "body is longer than 65536 bytes"]);
    }
}
