// Model module
