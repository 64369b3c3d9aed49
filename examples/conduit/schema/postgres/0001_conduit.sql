-- The Conduit example (examples/conduit), on PostgreSQL: users, follows, articles with
-- their tags and favorites, comments. Ids are chosen by the services
-- (random, below 2^53, so JavaScript clients read them exactly): an id must
-- be known before the save that inserts its row, since the answer that
-- shows it is written before the save. Times are RFC 3339 text in UTC with
-- milliseconds, which sorts as time does.
-- What others may see of a user. The password's hash is in a table of its
-- own, `passwords`, which only the users service is granted: a grant names
-- tables, so a secret column gets its own table.
CREATE TABLE users (
    id       BIGINT PRIMARY KEY,
    email    TEXT NOT NULL UNIQUE,
    username TEXT NOT NULL UNIQUE,
    bio      TEXT NOT NULL DEFAULT '',
    image    TEXT NOT NULL DEFAULT ''
);

CREATE TABLE passwords (
    user_id BIGINT PRIMARY KEY REFERENCES users (id),
    -- A PHC string: $argon2id$v=19$m=19456,t=2,p=1$salt$hash
    hash    TEXT NOT NULL
);

CREATE TABLE follows (
    follower BIGINT NOT NULL REFERENCES users (id),
    followed BIGINT NOT NULL REFERENCES users (id),
    PRIMARY KEY (follower, followed)
);
CREATE INDEX follows_followed ON follows (followed);

CREATE TABLE articles (
    id          BIGINT PRIMARY KEY,
    slug        TEXT NOT NULL UNIQUE,
    title       TEXT NOT NULL,
    description TEXT NOT NULL,
    body        TEXT NOT NULL,
    author      BIGINT NOT NULL REFERENCES users (id),
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE INDEX articles_created ON articles (created_at);
CREATE INDEX articles_author ON articles (author, created_at);

-- A deleted article's tags, favorites and comments are deleted in the same
-- save; the references are checked at its commit.
CREATE TABLE article_tags (
    article BIGINT NOT NULL REFERENCES articles (id) DEFERRABLE INITIALLY DEFERRED,
    tag      TEXT NOT NULL,
    -- The tag's place in the article's tagList.
    position BIGINT NOT NULL,
    PRIMARY KEY (article, tag)
);
CREATE INDEX article_tags_tag ON article_tags (tag);

CREATE TABLE favorites (
    user_id BIGINT NOT NULL REFERENCES users (id),
    article BIGINT NOT NULL REFERENCES articles (id) DEFERRABLE INITIALLY DEFERRED,
    PRIMARY KEY (user_id, article)
);
CREATE INDEX favorites_article ON favorites (article);

CREATE TABLE comments (
    id         BIGINT PRIMARY KEY,
    article    BIGINT NOT NULL REFERENCES articles (id) DEFERRABLE INITIALLY DEFERRED,
    author     BIGINT NOT NULL REFERENCES users (id),
    body       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX comments_article ON comments (article, created_at);
