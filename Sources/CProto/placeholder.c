int cproto_placeholder;
