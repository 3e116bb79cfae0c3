"""Pages people look at, served by the API itself with no CDN: GraphiQL on locally served
assets (``assets``), and the persona explorer for analysts (``routes``, plain HTML and JS)."""
